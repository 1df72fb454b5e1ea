"""The learned router's versioned artifact: one .npz of weights plus its JSON metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.domain.errors import ConfigError

FORMAT = "sluice-router"
#: Bump when the meaning of a stored field changes; loaders refuse other versions.
FORMAT_VERSION = 1
#: "tfidf-embed-blend": a tf-idf LR and an embedding LR fitted apart, their logits blended
#: with a weight chosen by inner CV; stored as one embed+tfidf model (same arrays, same serving).
KINDS: tuple[str, ...] = ("tfidf-lr", "embed-lr", "embed+tfidf-lr", "tfidf-embed-blend")
_ARRAYS = ("ngram_idx", "ngram_idf", "ngram_coef", "emb_coef", "sig_coef", "sig_mean",
           "sig_scale", "intercept",
           # The optional second head, P(cheap model strictly better), on the same features.
           "w_ngram_coef", "w_emb_coef", "w_sig_coef", "w_intercept")


@dataclass
class RouterArtifact:
    """Weights of a logistic model over n-gram TF-IDF, embedding and heuristic-signal features."""

    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The artifact's version string, recorded with every routing decision."""
        return str(self.meta["version"])

    def weights_digest(self) -> str:
        """A short hash of every weight, so two artifacts with equal weights share a version."""
        h = hashlib.sha256(self.kind.encode())
        for name in _ARRAYS:
            if name in self.arrays:
                h.update(name.encode())
                h.update(np.ascontiguousarray(self.arrays[name]).tobytes())
        return h.hexdigest()[:12]

    def save(self, path: str | Path) -> Path:
        """Write ``<path>`` (.npz, loaded by workers) and a readable ``.json`` of the metadata."""
        out = Path(path)
        if out.suffix != ".npz":
            out = out.with_suffix(".npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, format=FORMAT, format_version=FORMAT_VERSION, kind=self.kind)
        blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(out, meta_json=blob, **self.arrays)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return out


def load_artifact(path: str | Path) -> RouterArtifact:
    """Read and check an artifact written by :meth:`RouterArtifact.save`."""
    src = Path(path)
    if not src.exists():
        raise ConfigError(f"router artifact {src} not found; train one with "
                          "`sluice router train --out PATH`", path=str(src))
    try:
        # No pickles: an artifact is data, never code.
        with np.load(src, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta_json"]).decode("utf-8"))
            arrays = {k: data[k] for k in data.files if k != "meta_json"}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"router artifact {src} is unreadable ({exc}); retrain it",
                          path=str(src)) from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"router artifact {src} has format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this build reads {FORMAT!r} version "
            f"{FORMAT_VERSION}: retrain it with `sluice router train`", path=str(src))
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"router artifact {src} has unknown kind {kind!r}", path=str(src))
    return RouterArtifact(kind, meta, arrays)
