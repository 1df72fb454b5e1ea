"""The learned router: logistic regression over prompt n-grams, embeddings and heuristic signals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.domain.errors import ConfigError
from scheduler.router.artifact import RouterArtifact, load_artifact
from scheduler.router.base import Router, RouteInput
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.textfeatures import NgramSpec, ngram_counts, tfidf_weights

log = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """Anything that turns texts into an (n, dim) array (the MiniLM embedder, or a cache)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, one row each."""
        ...


@dataclass(frozen=True)
class _Head:
    """One logistic model's weights, with the signal standardisation folded in."""

    intercept: float
    sig_w: list[float]
    ngram_coef: dict[int, float]
    emb_coef: np.ndarray | None


class LearnedRouter(Router):
    """Scores with the weights of a :class:`RouterArtifact`; build it with :func:`load_router`."""

    name = "learned"

    def __init__(self, artifact: RouterArtifact, embedder: TextEmbedder | None = None) -> None:
        self.artifact = artifact
        self.version = artifact.version
        a, feats = artifact.arrays, artifact.meta["features"]
        self._signals = HeuristicRouter()
        self._sig_names: list[str] = list(feats.get("signals") or [])
        if self._sig_names and feats.get("signals_from") != self._signals.label:
            raise ConfigError(
                f"router artifact {self.version} was trained on signals of "
                f"{feats.get('signals_from')}, but this build computes {self._signals.label}'s: "
                "retrain it with `sluice router train`")
        self._spec: NgramSpec | None = None
        if feats.get("ngrams"):
            self._spec = NgramSpec.from_dict(feats["ngrams"])
            idx = a["ngram_idx"].tolist()
            # Plain dicts: a single decision touches a few hundred features, and dict lookups
            # beat numpy fancy indexing at that size.
            self._idf = dict(zip(idx, a["ngram_idf"].tolist()))
        # Head 0 is P(cheap suffices); an optional head 1 ("w_") is P(cheap strictly better).
        self._heads = [self._head(a, p) for p in ("", "w_") if p + "intercept" in a]
        if feats.get("embedding") and embedder is None:
            raise ConfigError(f"router artifact {self.version} needs an embedder; "
                              "load it with load_router()")
        self._embedder = embedder if feats.get("embedding") else None

    def _head(self, a: dict[str, np.ndarray], prefix: str) -> _Head:
        intercept, sig_w = float(a[prefix + "intercept"][0]), []
        if self._sig_names:
            # Fold the standardisation into the weights once, instead of per decision.
            w = a[prefix + "sig_coef"] / a["sig_scale"]
            intercept -= float(np.dot(w, a["sig_mean"]))
            sig_w = w.tolist()
        coef = (dict(zip(a["ngram_idx"].tolist(), a[prefix + "ngram_coef"].tolist()))
                if self._spec is not None else {})
        return _Head(intercept, sig_w, coef, a.get(prefix + "emb_coef"))

    def _logits_text(self, item: RouteInput) -> list[float]:
        zs = [h.intercept for h in self._heads]
        if self._sig_names:
            signals = self._signals.signals(item)
            s = [signals[n] for n in self._sig_names]
            zs = [z + sum(w * v for w, v in zip(h.sig_w, s)) for z, h in zip(zs, self._heads)]
        if self._spec is not None:
            weights = tfidf_weights(ngram_counts(item.prompt, self._spec), self._idf)
            zs = [z + sum(v * h.ngram_coef[i] for i, v in weights.items())
                  for z, h in zip(zs, self._heads)]
        return zs

    def head_logits(self, items: Sequence[RouteInput]) -> np.ndarray:
        """Each head's logit per item, shape (len(items), heads): what blends are fitted on."""
        logits = np.array([self._logits_text(item) for item in items], dtype=float)
        logits = logits.reshape(len(items), len(self._heads))
        if self._embedder is not None and len(items):
            # One batched embedding call for the whole list: per-prompt calls cost several
            # times more in MiniLM's fixed overhead.
            vecs = self._embedder.embed([item.prompt for item in items])
            logits += np.stack([vecs @ h.emb_coef for h in self._heads], axis=1)
        return logits

    def score_inputs(self, items: Sequence[RouteInput]) -> list[float]:
        return combine_logits(self.head_logits(items)).tolist()

    def score_input(self, item: RouteInput) -> float:
        return self.score_inputs([item])[0]


def combine(heads: Sequence[float]) -> float:
    """P(cheap suffices) plus P(cheap strictly better), capped at 1: ranks by the cheap model's
    expected gain over the flagship yet keeps the one-head scale, so thresholds keep meaning
    (the mean of the two would send nearly every prompt to the flagship at 0.5)."""
    return min(1.0, sum(heads))


def combine_logits(logits: np.ndarray) -> np.ndarray:
    """:func:`combine` over rows of head logits."""
    z = np.clip(np.asarray(logits, dtype=float), -30.0, 30.0)
    return np.minimum(1.0, (1.0 / (1.0 + np.exp(-z))).sum(axis=1))


def load_router(path: str | Path, *, fallback: Router | None = None,
                embedder: TextEmbedder | None = None) -> Router:
    """Load a learned router from its artifact, with its embedding model if it uses one.

    Call this once when a worker starts. With ``fallback`` given, a missing or unusable
    artifact (or an embedding model that cannot load) yields ``fallback`` and a warning
    instead of an error, so a worker still routes, and its decisions name the router used.
    """
    try:
        artifact = load_artifact(path)
        emb = artifact.meta["features"].get("embedding")
        if emb and embedder is None:
            from scheduler.router.embedder import MODEL_ID, Embedder

            if emb.get("model") != MODEL_ID:
                raise ConfigError(f"router artifact {path} was trained on embeddings of "
                                  f"{emb.get('model')!r}; this build ships {MODEL_ID!r}")
            embedder = Embedder(max_tokens=int(emb["max_tokens"])).load()
        return LearnedRouter(artifact, embedder)
    except ConfigError as exc:
        if fallback is None:
            raise
        log.warning("learned router unavailable (%s); routing with %s", exc, fallback.label)
        return fallback
