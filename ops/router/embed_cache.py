"""An on-disk cache of prompt embeddings, so repeated training and evaluation skip the model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scheduler.router.embedder import DIM, Embedder

#: Under the gitignored working folder; safe to delete at any time.
DEFAULT_CACHE_DIR = Path(".sluice") / "cache" / "router-embeddings"


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cached_embeddings(texts: Sequence[str], embedder: Embedder,
                      cache_dir: Path | None = DEFAULT_CACHE_DIR) -> np.ndarray:
    """Embeddings of ``texts``, computing only those the cache lacks and saving them."""
    if cache_dir is None:
        return embedder.embed(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(embedder.tag.encode()).hexdigest()[:12]
    path = cache_dir / f"{tag}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as data:
            known = dict(zip(data["keys"].tolist(), data["vecs"]))
    keys = [_key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
    if missing:
        vecs = embedder.embed([t for _, t in missing])
        known.update({k: v for (k, _), v in zip(missing, vecs)})
        all_keys = list(known)
        np.savez(path, keys=np.array(all_keys), vecs=np.stack([known[k] for k in all_keys]))
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = known[k]
    return out


class CachedEmbedder:
    """An embedder that reads and fills the on-disk cache (for training and evaluation)."""

    def __init__(self, embedder: Embedder, cache_dir: Path | None = DEFAULT_CACHE_DIR) -> None:
        self.embedder = embedder
        self.cache_dir = cache_dir

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, from the cache where it has them."""
        return cached_embeddings(texts, self.embedder, self.cache_dir)
