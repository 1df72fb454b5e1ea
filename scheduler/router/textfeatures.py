"""Hashed word n-gram counts of a prompt, stable across processes, for the learned router."""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class NgramSpec:
    """How prompt text becomes hashed n-gram features; stored in the artifact, so train = serve."""

    #: Size of the hashed feature space (a power of two).
    dim: int = 1 << 20
    max_n: int = 2
    #: Head and tail of long prompts that are read; the middle is rarely the instruction.
    head_chars: int = 3000
    tail_chars: int = 1000

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the artifact."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NgramSpec:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**{k: data[k] for k in ("dim", "max_n", "head_chars", "tail_chars")})


def ngram_counts(text: str, spec: NgramSpec) -> Counter[int]:
    """Feature index -> count for the word 1..max_n-grams of ``text``.

    crc32 rather than ``hash()``: Python salts string hashes per process, and the indices
    must match between the trainer and every worker.
    """
    if len(text) > spec.head_chars + spec.tail_chars:
        text = text[:spec.head_chars] + " " + text[-spec.tail_chars:]
    tokens = _TOKEN.findall(text.lower())
    mask = spec.dim - 1
    grams = tokens
    if spec.max_n >= 2:
        grams = tokens + [a + " " + b for a, b in zip(tokens, tokens[1:])]
    if spec.max_n >= 3:
        grams += [" ".join(t) for t in zip(tokens, tokens[1:], tokens[2:])]
    return Counter(zlib.crc32(g.encode("utf-8")) & mask for g in grams)


def tfidf_weights(counts: Counter[int], idf: dict[int, float]) -> dict[int, float]:
    """Sublinear tf times idf, L2-normalised, over the features the vocabulary holds."""
    out = {i: (1.0 + math.log(c)) * idf[i] for i, c in counts.items() if i in idf}
    norm = math.sqrt(sum(v * v for v in out.values()))
    if norm > 0:
        for i in out:
            out[i] /= norm
    return out
