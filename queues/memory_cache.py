"""The response cache's in-process twin: the same base class, keys and values, for embedded use."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from fnmatch import fnmatchcase

from models.domain.settings import Settings
from queues.response_cache import ResponseCacheBase
from queues.semantic_cache import Embedder, MemoryVectorLog
from queues.single_flight import MemorySingleFlight


class MemoryState:
    """The in-process store's data: LRU entries with expiry, per-scope indexes, locks, vectors."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.scopes: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.vectors = MemoryVectorLog()
        self.flights = MemorySingleFlight(self.get)

    def get(self, entry: str) -> bytes | None:
        """The live value at ``entry`` (expired ones are dropped on sight)."""
        with self.lock:
            item = self.entries.get(entry)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self.entries[entry]
                return None
            self.entries.move_to_end(entry)
            return item[1]


class MemoryResponseCache(ResponseCacheBase):
    """The in-process twin of :class:`RedisResponseCache`: same policy, keys and values."""

    backend = "memory"

    def __init__(self, settings: Settings, *, state: MemoryState | None = None,
                 embedder: Embedder | None = None) -> None:
        self.state = state or MemoryState()
        super().__init__(settings, flights=self.state.flights, vectors=self.state.vectors,
                         embedder=embedder)

    def _get(self, entry: str) -> bytes | None:
        return self.state.get(entry)

    def _put(self, entry: str, index: str, value: bytes, ttl_ms: int, lock: str) -> bool:
        st, now = self.state, time.monotonic()
        with st.lock:
            expires = now + ttl_ms / 1000.0
            st.entries[entry] = (expires, value)
            st.entries.move_to_end(entry)
            scope = st.scopes.setdefault(index, {})
            scope[entry] = expires
            for name in [n for n, t in scope.items() if t <= now]:
                del scope[name]
            extra = len(scope) - self.config.max_entries_per_scope
            for name in sorted(scope, key=scope.__getitem__)[:max(extra, 0)]:
                del scope[name]
                st.entries.pop(name, None)
            while len(st.entries) > st.max_entries:  # least recently used first
                st.entries.popitem(last=False)
        st.flights.release(lock)
        return True

    def _delete_matching(self, pattern: str) -> int:
        st = self.state
        with st.lock:
            names = [n for n in st.entries if fnmatchcase(n, pattern)]
            for name in names:
                del st.entries[name]
            for index in [i for i in st.scopes if fnmatchcase(i, pattern)]:
                del st.scopes[index]
        return len(names)


_SHARED: dict[str, MemoryState] = {}
_SHARED_LOCK = threading.Lock()


def shared_memory_state(prefix: str) -> MemoryState:
    """One in-process store per key prefix.

    The producer and an embedded worker each build their levers from settings; they must
    share one store, or the worker's writes would never be read.
    """
    with _SHARED_LOCK:
        state = _SHARED.get(prefix)
        if state is None:
            state = _SHARED[prefix] = MemoryState()
        return state
