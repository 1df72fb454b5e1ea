"""Fit a learned router on labelled prompts and pack it as a versioned artifact."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.domain.errors import ConfigError
from ops.router.datasets import Example
from scheduler.router.artifact import KINDS, RouterArtifact
from scheduler.router.base import RouteInput
from scheduler.router.embedder import DIM, MODEL_ID
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.learned import TextEmbedder
from scheduler.router.textfeatures import NgramSpec, ngram_counts

#: The kind whose two models are fitted apart and blended (see ops/router/blend.py).
BLEND_KIND = "tfidf-embed-blend"


@dataclass(frozen=True)
class TrainConfig:
    """Model choices; the defaults are the ones the cross-validated eval picked."""

    kind: str = "tfidf-lr"
    #: Inverse L2 strength of the logistic regression.
    c: float = 0.5
    #: An n-gram must occur in this many training prompts to get a weight.
    min_df: int = 2
    ngrams: NgramSpec = field(default_factory=NgramSpec)
    embed_max_tokens: int = 128
    #: Add the heuristic router's signals (length, code, math, ...) as dense features.
    signals: bool = True
    #: Also fit P(cheap model strictly better) and score the sum of both heads (capped at 1),
    #: which ranks by expected quality gain: the cheap_suffices label alone cannot tell "both
    #: right" from "only the cheap model right" (5-fold CV: MMLU 44.8 % -> 41.2 % strong share
    #: at 95 % of strong accuracy, GSM8K 63.3 % -> 59.4 %).
    weak_head: bool = True
    #: tfidf-embed-blend: the embedding model's weight in the logit blend, one of these,
    #: chosen on ``inner_folds``-fold CV of the training prompts alone (never the prompts a
    #: caller evaluates on), by the strong share that reaches ``blend_target`` of strong quality.
    blend_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    #: Inverse L2 strength of the embedding model (dense 384 columns want more shrinkage).
    emb_c: float = 0.3
    inner_folds: int = 5
    #: Salts the inner folds apart from any outer split made with ``fold_ids``' seeds 0..999.
    inner_seed: int = 1000
    blend_target: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown learned router kind {self.kind!r}; "
                              f"use one of {', '.join(KINDS)}")

    @property
    def uses_ngrams(self) -> bool:
        """Whether prompt n-grams are features."""
        return "tfidf" in self.kind

    @property
    def uses_embeddings(self) -> bool:
        """Whether MiniLM embeddings are features."""
        return "embed" in self.kind


def data_hash(examples: Sequence[Example]) -> str:
    """SHA-256 over prompts and labels: which data an artifact was trained on."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.prompt}\x00{ex.weak}\x00{ex.strong}\x00{ex.history_turns}\n".encode())
    return h.hexdigest()


class _Ngrams:
    """Vocabulary and idf fitted on training prompts; turns prompts into a sparse matrix."""

    def __init__(self, counts: list[Any], min_df: int) -> None:
        df: dict[int, int] = {}
        for c in counts:
            for i in c:
                df[i] = df.get(i, 0) + 1
        n = len(counts)
        kept = sorted(i for i, d in df.items() if d >= min_df)
        self.index = np.array(kept, dtype=np.int64)
        self.column = {i: j for j, i in enumerate(kept)}
        # sklearn's smooth idf, so weights are comparable with a TfidfVectorizer.
        self.idf = {i: math.log((1 + n) / (1 + df[i])) + 1.0 for i in kept}
        self.idf_vector = np.array([self.idf[i] for i in kept], dtype=float)

    def matrix(self, counts: list[Any]) -> Any:
        """Rows of sublinear-tf x idf, L2-normalised: the same numbers as ``tfidf_weights``."""
        from scipy.sparse import csr_matrix
        from sklearn.preprocessing import normalize

        indptr, cols, vals = [0], [], []
        column = self.column
        for c in counts:
            kept = [(column[i], v) for i, v in c.items() if i in column]
            cols.extend(j for j, _ in kept)
            vals.extend(v for _, v in kept)
            indptr.append(len(cols))
        m = csr_matrix((np.array(vals, dtype=float), np.array(cols, dtype=np.int64),
                        np.array(indptr, dtype=np.int64)), shape=(len(counts), len(column)))
        m.data = 1.0 + np.log(m.data)
        m = m.multiply(self.idf_vector[None, :]).tocsr()
        return normalize(m, norm="l2", copy=False)


def _signal_matrix(examples: Sequence[Example]) -> tuple[list[str], np.ndarray]:
    router = HeuristicRouter()
    rows = [router.signals(RouteInput(ex.prompt, ex.history_turns)) for ex in examples]
    names = sorted(rows[0])
    return names, np.array([[r[n] for n in names] for r in rows], dtype=float)


def _fit_lr(x: Any, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    # liblinear: on ~10^5 sparse columns it converged several times faster than lbfgs here.
    return LogisticRegression(C=c, solver="liblinear", max_iter=1000).fit(x, y)


def _head_arrays(model: Any, sizes: dict[str, int], config: TrainConfig,
                 prefix: str) -> dict[str, np.ndarray]:
    """One logistic head's weights by feature block, named ``prefix + sig_coef`` etc."""
    coef, start, out = model.coef_[0], 0, {}
    if config.signals:
        out["sig_coef"] = coef[start:start + sizes["signals"]]
        start += sizes["signals"]
    if config.uses_ngrams:
        out["ngram_coef"] = coef[start:start + sizes["ngrams"]].astype(np.float32)
        start += sizes["ngrams"]
    if config.uses_embeddings:
        out["emb_coef"] = coef[start:start + DIM]
    out["intercept"] = np.array([model.intercept_[0]])
    return {prefix + k: v for k, v in out.items()}


def fit_router(examples: Sequence[Example], config: TrainConfig = TrainConfig(), *,
               embedder: TextEmbedder | None = None, metrics: dict[str, Any] | None = None,
               count_cache: dict[str, Any] | None = None) -> RouterArtifact:
    """Train on ``examples`` (label: the cheap model did at least as well; with ``weak_head``
    a second head on "it did strictly better") and pack the weights."""
    if config.kind == BLEND_KIND:
        from ops.router.blend import fit_blend

        return fit_blend(examples, config, embedder=embedder, metrics=metrics,
                         count_cache=count_cache)
    from scipy.sparse import csr_matrix, hstack

    y = np.array([ex.cheap_suffices for ex in examples], dtype=int)
    if len(set(y.tolist())) < 2:
        raise ConfigError("training data needs prompts where the cheap model sufficed and "
                          "prompts where it did not")
    blocks: list[Any] = []
    arrays: dict[str, np.ndarray] = {}
    features: dict[str, Any] = {"ngrams": None, "embedding": None, "signals": []}
    sizes: dict[str, int] = {}
    if config.signals:
        names, sig = _signal_matrix(examples)
        mean, scale = sig.mean(axis=0), sig.std(axis=0)
        scale[scale == 0] = 1.0
        blocks.append(csr_matrix((sig - mean) / scale))
        features["signals"] = names
        # The signals' definitions belong to the heuristic's version: serving checks it.
        features["signals_from"] = HeuristicRouter().label
        arrays.update(sig_mean=mean, sig_scale=scale)
        sizes["signals"] = len(names)
    if config.uses_ngrams:
        cache = count_cache if count_cache is not None else {}
        counts = [cache.get(ex.prompt) or cache.setdefault(
            ex.prompt, ngram_counts(ex.prompt, config.ngrams)) for ex in examples]
        vocab = _Ngrams(counts, config.min_df)
        blocks.append(vocab.matrix(counts))
        features["ngrams"] = config.ngrams.to_dict()
        sizes["ngrams"] = len(vocab.index)
    if config.uses_embeddings:
        if embedder is None:
            raise ConfigError(f"{config.kind} needs an embedder")
        vecs = np.asarray(embedder.embed([ex.prompt for ex in examples]), dtype=float)
        blocks.append(csr_matrix(vecs))
        features["embedding"] = {"model": MODEL_ID, "max_tokens": config.embed_max_tokens}
        sizes["embedding"] = DIM
    x = hstack(blocks).tocsr()
    model = _fit_lr(x, y, config.c)
    arrays.update(_head_arrays(model, sizes, config, ""))
    heads = [model.predict_proba(x)[:, 1]]
    if config.weak_head:
        better = np.array([ex.weak > ex.strong for ex in examples], dtype=int)
        if len(set(better.tolist())) == 2:
            second = _fit_lr(x, better, config.c)
            arrays.update(_head_arrays(second, sizes, config, "w_"))
            heads.append(second.predict_proba(x)[:, 1])
    # The served score (the heads combined); its log loss against the label is kept so a
    # test can check that serving recomputes exactly what training fitted.
    p = np.clip(np.minimum(1.0, np.sum(heads, axis=0)), 1e-12, 1 - 1e-12)
    train_logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if config.uses_ngrams:
        arrays.update(ngram_idx=vocab.index.astype(np.int32),
                      ngram_idf=vocab.idf_vector.astype(np.float32))
    meta = {
        "features": features,
        "training": {"examples": len(examples), "data_sha256": data_hash(examples),
                     "label": "cheap_suffices = weak quality >= strong quality",
                     "weak_head": "w_intercept" in arrays,
                     "cheap_suffices_rate": float(y.mean()), "train_logloss": train_logloss,
                     "config": {**asdict(config), "ngrams": config.ngrams.to_dict()}},
        "metrics": metrics or {},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    artifact = RouterArtifact(config.kind, meta, arrays)
    meta["version"] = f"{config.kind}-{artifact.weights_digest()}"
    return artifact
