"""The tf-idf + embedding blend: weight chosen on inner folds only; it serves as one model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import ops.router.blend as blend
from models.domain.errors import ConfigError
from ops.router.datasets import Example
from ops.router.evaluation import fold_ids, out_of_fold_scores
from ops.router.training import BLEND_KIND, TrainConfig, fit_router
from scheduler.router.base import RouteInput
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.learned import LearnedRouter, combine_logits, load_router
from tests.unit.test_router_learned import FakeEmbedder, labelled_set

CONFIG = TrainConfig(kind=BLEND_KIND, min_df=1, inner_folds=3)


def test_the_weight_is_chosen_without_the_outer_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = labelled_set(240, seed=4)
    seen: list[set[str]] = []
    real = blend.choose_weight

    def spy(exs, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append({ex.prompt for ex in exs})
        return real(exs, *args, **kwargs)

    monkeypatch.setattr(blend, "choose_weight", spy)
    outer: list[set[str]] = []
    fitted: list[tuple[int, set[str]]] = []
    real_blend, real_fit = blend.fit_blend, blend.fit_router

    def blend_spy(exs, *args, **kwargs):  # type: ignore[no-untyped-def]
        outer.append({ex.prompt for ex in exs})
        return real_blend(exs, *args, **kwargs)

    def fit_spy(exs, *args, **kwargs):  # type: ignore[no-untyped-def]
        fitted.append((len(outer) - 1, {ex.prompt for ex in exs}))
        return real_fit(exs, *args, **kwargs)

    monkeypatch.setattr(blend, "fit_blend", blend_spy)
    monkeypatch.setattr(blend, "fit_router", fit_spy)
    scores = out_of_fold_scores(examples, BLEND_KIND, folds=3, seed=7, config=CONFIG,
                                embedder=FakeEmbedder)
    assert not np.isnan(scores).any()
    ids = fold_ids(examples, 3, seed=7)
    assert len(seen) == len(outer) == 3
    for k, chosen_on in enumerate(seen):
        held_out = {ex.prompt for ex, f in zip(examples, ids) if f == k}
        assert chosen_on == outer[k] == {ex.prompt for ex, f in zip(examples, ids) if f != k}
        assert not chosen_on & held_out
    # Every model fitted for an outer fold (the inner folds' and the final ones) saw only that
    # fold's training prompts, and the inner folds held some of them out.
    assert len(fitted) >= 3 * 7
    for k, prompts in fitted:
        assert prompts <= outer[k]
    assert sum(prompts < outer[k] for k, prompts in fitted) == 3 * 3 * 2


def gain_examples(n: int, seed: int) -> list[Example]:
    """The cheap model fails exactly on prompts that ask for design or proof (the embedding's
    first coordinate), with words that a bag of n-grams sees too."""
    return [Example(e.prompt, 0.0 if any(w in e.prompt for w in ("Design", "Prove", "Implement"))
                    else 1.0, 1.0, "synthetic") for e in labelled_set(n, seed)]


def test_the_blend_serves_as_one_model_with_the_blended_logits(tmp_path: Path) -> None:
    train = gain_examples(300, seed=5)
    emb = FakeEmbedder()
    config = TrainConfig(kind=BLEND_KIND, min_df=1, blend_weights=(0.4,))
    artifact = fit_router(train, config, embedder=emb)
    assert artifact.meta["training"]["blend"]["emb_weight"] == 0.4
    text_cfg, emb_cfg = blend._configs(config)
    items = [RouteInput(e.prompt) for e in labelled_set(60, seed=6)]
    zt = LearnedRouter(fit_router(train, text_cfg)).head_logits(items)
    ze = LearnedRouter(fit_router(train, emb_cfg, embedder=emb), emb).head_logits(items)
    loaded = load_router(artifact.save(tmp_path / "b.npz"), embedder=emb)
    assert loaded.version == artifact.version and loaded.version.startswith(BLEND_KIND)
    assert loaded.score_inputs(items) == pytest.approx(
        combine_logits(0.6 * zt + 0.4 * ze).tolist(), abs=1e-5)
    # One decision and a batch agree (the batch embeds in one call).
    assert loaded.score_input(items[3]) == pytest.approx(loaded.score_inputs(items)[3], abs=1e-9)
    p = np.clip(loaded.score_inputs([RouteInput(e.prompt) for e in train]), 1e-12, 1 - 1e-12)
    y = np.array([e.cheap_suffices for e in train])
    logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert logloss == pytest.approx(artifact.meta["training"]["train_logloss"], rel=1e-5)


def test_choose_weight_takes_the_least_strong_share() -> None:
    examples = gain_examples(200, seed=8)
    hard = np.array([ex.weak < ex.strong for ex in examples])
    # The embedding logits know the answer, the text logits are noise.
    rng = np.random.default_rng(0)
    text = rng.normal(size=(len(examples), 1))
    emb = np.where(hard, -4.0, 4.0)[:, None]
    w, shares = blend.choose_weight(examples, text, emb, (0.0, 0.5, 1.0), 0.95)
    assert w in (0.5, 1.0) and shares["0"] > shares[f"{w:g}"]
    # Perfect ranking: the flagship takes the hard prompts until 95 % quality is reached.
    assert shares[f"{w:g}"] == pytest.approx(hard.mean() - 0.05, abs=0.01)
    # Ties go to the smaller weight (the simpler model).
    assert blend.choose_weight(examples, emb, emb, (0.3, 0.1), 0.95)[0] == 0.1


def test_weight_zero_is_the_text_model_and_needs_no_embedder(tmp_path: Path) -> None:
    train = gain_examples(200, seed=9)
    artifact = fit_router(train, TrainConfig(kind=BLEND_KIND, min_df=1, blend_weights=(0.0,)),
                          embedder=FakeEmbedder())
    assert artifact.meta["features"]["embedding"] is None and "emb_coef" not in artifact.arrays
    router = load_router(artifact.save(tmp_path / "t.npz"))
    assert router.score_text("Design a cache for the search index.") < router.score_text(
        "Rephrase this: the weather today.")


def test_blend_needs_an_embedder_and_sane_weights() -> None:
    train = gain_examples(100, seed=10)
    with pytest.raises(ConfigError, match="embedder"):
        fit_router(train, CONFIG)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        fit_router(train, TrainConfig(kind=BLEND_KIND, blend_weights=(1.5,)),
                   embedder=FakeEmbedder())


def test_an_embedding_artifact_without_the_extra_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = gain_examples(200, seed=11)
    path = fit_router(train, TrainConfig(kind=BLEND_KIND, min_df=1, blend_weights=(0.5,)),
                      embedder=FakeEmbedder()).save(tmp_path / "e.npz")
    # As if the 'embeddings' extra were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"sluicegate\[embeddings\]"):
        load_router(path)
    fallback = HeuristicRouter()
    assert load_router(path, fallback=fallback) is fallback
