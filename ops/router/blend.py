"""The tf-idf + embedding blend: two logistic models fitted apart, one weight chosen by inner CV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from models.domain.errors import ConfigError
from ops.router import metrics as M
from ops.router.datasets import Example
from ops.router.training import TrainConfig, fit_router
from scheduler.router.artifact import RouterArtifact
from scheduler.router.base import RouteInput
from scheduler.router.learned import LearnedRouter, TextEmbedder, combine_logits

_TEXT_ARRAYS = ("sig_coef", "ngram_coef")


class _Memo:
    """Embeds each distinct prompt once per fit: the inner folds ask for the same ones again."""

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder
        self.known: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, computing only the ones not seen in this fit."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.known))
        if missing:
            self.known.update(zip(missing, np.asarray(self.embedder.embed(missing))))
        return np.stack([self.known[t] for t in texts])


def _configs(config: TrainConfig) -> tuple[TrainConfig, TrainConfig]:
    text = replace(config, kind="tfidf-lr")
    # The signals stay in the text model only, so the blend does not count them twice.
    emb = replace(config, kind="embed-lr", signals=False, c=config.emb_c)
    return text, emb


def _logits(artifact: RouterArtifact, embedder: TextEmbedder | None,
            examples: Sequence[Example]) -> np.ndarray:
    model = LearnedRouter(artifact, embedder)
    return model.head_logits([RouteInput(ex.prompt, ex.history_turns) for ex in examples])


def inner_logits(examples: Sequence[Example], config: TrainConfig, embedder: TextEmbedder, *,
                 count_cache: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold head logits of the text and the embedding model, over ``examples`` alone
    (``config.inner_folds`` folds salted with ``config.inner_seed``)."""
    from ops.router.evaluation import fold_ids

    text_cfg, emb_cfg = _configs(config)
    ids = fold_ids(examples, config.inner_folds, config.inner_seed)
    better = {ex.weak > ex.strong for ex in examples}
    heads = 2 if config.weak_head and len(better) == 2 else 1
    zt, ze = np.zeros((len(examples), heads)), np.zeros((len(examples), heads))
    for k in range(config.inner_folds):
        test = np.flatnonzero(ids == k)
        if not len(test):
            continue
        train = [ex for ex, f in zip(examples, ids) if f != k]
        held = [examples[i] for i in test]
        t_art = fit_router(train, text_cfg, count_cache=count_cache)
        e_art = fit_router(train, emb_cfg, embedder=embedder)
        t, e = _logits(t_art, None, held), _logits(e_art, embedder, held)
        if t.shape[1] != heads or e.shape[1] != heads:
            raise ConfigError("an inner fold has no prompt where the cheap model did strictly "
                              "better; the blend needs more data (or weak_head off)")
        zt[test], ze[test] = t, e
    return zt, ze


def choose_weight(examples: Sequence[Example], text: np.ndarray, emb: np.ndarray,
                  weights: Sequence[float], target: float) -> tuple[float, dict[str, float]]:
    """The embedding weight whose blended scores need the least strong share to reach
    ``target`` of strong quality on ``examples``; ties go to the smaller weight."""
    weak = [ex.weak for ex in examples]
    strong = [ex.strong for ex in examples]
    goal = target * float(np.mean(strong))
    shares: dict[str, float] = {}
    for w in weights:
        curve = M.quality_curve(combine_logits((1 - w) * text + w * emb), weak, strong)
        share = M.share_for_quality(curve, goal)
        shares[f"{w:g}"] = 1.0 if math.isnan(share) else share
    best = min(weights, key=lambda w: (shares[f"{w:g}"], w))
    return float(best), shares


def merge(text: RouterArtifact, emb: RouterArtifact, w: float) -> dict[str, np.ndarray]:
    """One embed+tfidf model's arrays whose logits are ``(1 - w) * text + w * emb``."""
    arrays = dict(text.arrays)
    for prefix in ("", "w_"):
        if prefix + "intercept" not in text.arrays:
            continue
        for name in _TEXT_ARRAYS:
            if prefix + name in arrays:
                arrays[prefix + name] = (arrays[prefix + name] * (1 - w)).astype(
                    text.arrays[prefix + name].dtype)
        arrays[prefix + "emb_coef"] = emb.arrays[prefix + "emb_coef"] * w
        arrays[prefix + "intercept"] = ((1 - w) * text.arrays[prefix + "intercept"]
                                        + w * emb.arrays[prefix + "intercept"])
    return arrays


def fit_blend(examples: Sequence[Example], config: TrainConfig, *,
              embedder: TextEmbedder | None, metrics: dict[str, Any] | None = None,
              count_cache: dict[str, Any] | None = None) -> RouterArtifact:
    """Fit the text and embedding models on ``examples``, pick the blend weight by inner CV on
    the same ``examples`` (so an outer evaluation fold is never seen), and pack one artifact."""
    if embedder is None:
        raise ConfigError(f"{config.kind} needs an embedder")
    memo = _Memo(embedder)
    text_cfg, emb_cfg = _configs(config)
    weights = tuple(dict.fromkeys(float(w) for w in config.blend_weights))
    if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
        raise ConfigError(f"blend weights must lie in [0, 1], not {config.blend_weights}")
    inner: dict[str, float] = {}
    w = weights[0]
    if len(weights) > 1:
        zt, ze = inner_logits(examples, config, memo, count_cache=count_cache)
        w, inner = choose_weight(examples, zt, ze, weights, config.blend_target)
    text = fit_router(examples, text_cfg, count_cache=count_cache)
    if w > 0:
        emb = fit_router(examples, emb_cfg, embedder=memo)
        arrays = merge(text, emb, w)
        features = dict(text.meta["features"], embedding=emb.meta["features"]["embedding"])
        served = LearnedRouter(RouterArtifact(config.kind, {"features": features, "version": "-"},
                                              arrays), memo)
        zs = served.head_logits([RouteInput(ex.prompt, ex.history_turns) for ex in examples])
    else:
        # Weight 0: the text model alone, so serving needs no embedding model at all.
        arrays, features = dict(text.arrays), dict(text.meta["features"])
        zs = _logits(text, None, examples)
    y = np.array([ex.cheap_suffices for ex in examples], dtype=float)
    p = np.clip(combine_logits(zs), 1e-12, 1 - 1e-12)
    training = dict(text.meta["training"])
    training.update(
        train_logloss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        config={**text.meta["training"]["config"], "kind": config.kind, "emb_c": config.emb_c,
                "blend_weights": list(weights), "inner_folds": config.inner_folds,
                "inner_seed": config.inner_seed, "blend_target": config.blend_target},
        blend={"emb_weight": w, "chosen_by": f"{config.inner_folds}-fold CV on the training "
               "prompts", "inner_strong_share": inner})
    meta = {"features": features, "training": training, "metrics": metrics or {},
            "created": text.meta["created"]}
    artifact = RouterArtifact(config.kind, meta, arrays)
    meta["version"] = f"{config.kind}-{artifact.weights_digest()}"
    return artifact
