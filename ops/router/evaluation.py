"""K-fold evaluation of routers on labelled prompts: out-of-fold scores and their metrics."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.domain.errors import ConfigError
from ops.router import metrics as M
from ops.router.datasets import Example
from ops.router.training import TrainConfig, fit_router
from scheduler.router.artifact import KINDS
from scheduler.router.base import RouteInput
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.learned import LearnedRouter, TextEmbedder
from scheduler.router.random_router import RandomRouter

#: Routers the eval knows: the two untrained ones, the learned kinds, and "learned" (default kind).
EVAL_ROUTERS: tuple[str, ...] = ("heuristic", "random", "learned", *KINDS)


@dataclass
class RouterResult:
    """One router on one dataset: its metrics, its curve and how long scoring took."""

    router: str
    dataset: str
    n: int
    summary: dict[str, float]
    curve: M.Curve
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    #: Each prompt's out-of-fold score, in the order of ``examples`` (``--scores-out``).
    scores: Any = None
    examples: Sequence[Example] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with the curve thinned to at most ~200 points."""
        last = len(self.curve.shares) - 1
        step = max(1, last // 200)
        keep = sorted(set(range(0, last, step)) | {last})
        return {"router": self.router, "dataset": self.dataset, "n": self.n,
                "seconds": round(self.seconds, 2), **self.summary, **self.extra,
                "curve": {"share": [round(float(self.curve.shares[i]), 5) for i in keep],
                          "quality": [round(float(self.curve.quality[i]), 5) for i in keep]}}


def fold_ids(examples: Sequence[Example], folds: int, seed: int = 0) -> np.ndarray:
    """A fold per example from a salted hash of its prompt text, so duplicates share a fold."""
    if folds < 2:
        raise ConfigError(f"k-fold evaluation needs at least 2 folds, not {folds}")
    salt = str(seed).encode()
    return np.array([int.from_bytes(hashlib.blake2b(ex.prompt.encode(), digest_size=8,
                                                    key=salt).digest(), "big") % folds
                     for ex in examples])


def learned_config(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """The training config for an eval router name ("learned" means the default kind)."""
    base = base or TrainConfig()
    return base if name == "learned" else replace(base, kind=name)


def out_of_fold_scores(examples: Sequence[Example], router: str, *, folds: int = 5,
                       seed: int = 0, config: TrainConfig | None = None,
                       embedder: Callable[[], TextEmbedder] | None = None,
                       count_cache: dict[str, Any] | None = None) -> np.ndarray:
    """Each example's score from a router that never saw it during training."""
    inputs = [RouteInput(ex.prompt, ex.history_turns) for ex in examples]
    if router == "heuristic":
        return np.array(HeuristicRouter().score_inputs(inputs))
    if router == "random":
        return np.array(RandomRouter(seed).score_inputs(inputs))
    if router not in EVAL_ROUTERS:
        raise ConfigError(f"unknown router {router!r}; use one of {', '.join(EVAL_ROUTERS)}")
    cfg = learned_config(router, config)
    emb = embedder() if cfg.uses_embeddings and embedder is not None else None
    ids = fold_ids(examples, folds, seed)
    scores = np.full(len(examples), np.nan)
    for k in range(folds):
        train = [ex for ex, f in zip(examples, ids) if f != k]
        test = np.flatnonzero(ids == k)
        if not len(test):
            continue
        artifact = fit_router(train, cfg, embedder=emb, count_cache=count_cache)
        model = LearnedRouter(artifact, emb)
        scores[test] = model.score_inputs([inputs[i] for i in test])
    return scores


def split(examples: Sequence[Example], combined: bool = True) -> dict[str, list[Example]]:
    """Each benchmark on its own, plus all of them together when there are several."""
    out: dict[str, list[Example]] = {}
    for ex in examples:
        out.setdefault(ex.benchmark, []).append(ex)
    if combined and len(out) > 1:
        out["all"] = list(examples)
    return out


def evaluate(examples: Sequence[Example], routers: Sequence[str], *, folds: int = 5,
             seed: int = 0, combined: bool = True, config: TrainConfig | None = None,
             embedder: Callable[[], TextEmbedder] | None = None,
             progress: Callable[[str], None] | None = None) -> list[RouterResult]:
    """Metrics of every router on every dataset (learned ones cross-validated within it)."""
    results = []
    count_cache: dict[str, Any] = {}
    for name, subset in split(examples, combined).items():
        weak = [ex.weak for ex in subset]
        strong = [ex.strong for ex in subset]
        for router in routers:
            if progress:
                progress(f"{router} on {name} ({len(subset)} prompts)")
            start = time.perf_counter()
            scores = out_of_fold_scores(subset, router, folds=folds, seed=seed, config=config,
                                        embedder=embedder, count_cache=count_cache)
            curve = M.quality_curve(scores, weak, strong)
            results.append(RouterResult(router, name, len(subset), M.summarize(curve), curve,
                                        time.perf_counter() - start, scores=scores,
                                        examples=subset))
        oracle = M.quality_curve(M.oracle_scores(weak, strong), weak, strong)
        results.append(RouterResult("oracle", name, len(subset), M.summarize(oracle), oracle, 0.0))
    return results


def results_for(examples: Sequence[Example], scores: dict[str, Any], *,
                dataset: str) -> list[RouterResult]:
    """Results of routers whose scores were computed elsewhere (``--from-ledger``: the
    candidate's out-of-fold scores and the current artifact's), plus the oracle."""
    weak = [ex.weak for ex in examples]
    strong = [ex.strong for ex in examples]
    out = []
    for name, s in scores.items():
        arr = np.asarray(s, dtype=float)
        curve = M.quality_curve(arr, weak, strong)
        out.append(RouterResult(name, dataset, len(examples), M.summarize(curve), curve, 0.0,
                                scores=arr, examples=examples))
    oracle = M.quality_curve(M.oracle_scores(weak, strong), weak, strong)
    out.append(RouterResult("oracle", dataset, len(examples), M.summarize(oracle), oracle, 0.0))
    return out


def write_scores(results: Sequence[RouterResult], path: Any) -> int:
    """Every prompt's out-of-fold score, one JSON line each (router, dataset, benchmark, the
    prompt's SHA-256, its score and both models' grades), so the figures can be recomputed
    outside the project; returns the lines written."""
    import json
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w") as fh:
        for r in results:
            if r.scores is None:
                continue
            for ex, score in zip(r.examples, r.scores):
                fh.write(json.dumps({
                    "router": r.router, "dataset": r.dataset, "benchmark": ex.benchmark,
                    "prompt_sha256": hashlib.sha256(ex.prompt.encode()).hexdigest(),
                    "score": None if np.isnan(score) else round(float(score), 6),
                    "weak": ex.weak, "strong": ex.strong}) + "\n")
                n += 1
    return n
