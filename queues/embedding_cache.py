"""The per-item embedding cache: one entry per (scope, model, dimensions, exact input) in Redis,
or an in-process twin; read with one MGET per request, filled by the worker that paid."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from models.domain.cache_key import scope_of
from models.domain.embedding import Item, item_key
from models.domain.settings import Settings

log = logging.getLogger(__name__)


class ItemCache:
    """Vectors (base64 float32) by item key. Fails open: an unreachable store is a miss."""

    backend = "base"

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.cache.key_prefix + "emb:"
        self.ttl_s = settings.embeddings.cache_ttl_s
        self._features = settings.cache.features

    def scope(self, request: Any) -> str:
        """The scope the request's feature caches under (as the response cache scopes it)."""
        policy = self._features.get(request.feature) or self._features.get("*")
        return scope_of(request, policy.scope if policy is not None else "feature")

    def keys(self, request: Any, model: str, dimensions: int, items: Sequence[Item]
             ) -> list[str]:
        """The store keys of ``items``."""
        scope = self.scope(request)
        return [self.prefix + item_key(scope, model, dimensions, item) for item in items]

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The cached vector of each key, or None."""
        if not keys:
            return []
        try:
            return self._get(keys)
        except Exception as exc:  # noqa: BLE001 - the cache fails open: a miss
            log.warning("embedding cache read failed (%s); treating %d items as misses",
                        exc, len(keys))
            return [None] * len(keys)

    def put_many(self, entries: dict[str, str]) -> None:
        """Keep each vector for ``ttl_s`` (best effort)."""
        if not entries:
            return
        try:
            self._put(entries)
        except Exception as exc:  # noqa: BLE001 - a lost store only costs a later miss
            log.warning("embedding cache write failed (%s); %d vectors not kept", exc,
                        len(entries))

    def _get(self, keys: Sequence[str]) -> list[str | None]:
        raise NotImplementedError

    def _put(self, entries: dict[str, str]) -> None:
        raise NotImplementedError


class RedisItemCache(ItemCache):
    """One MGET per lookup, one pipelined SET EX per store."""

    backend = "redis"

    def __init__(self, settings: Settings, client: Any = None) -> None:
        super().__init__(settings)
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            timeout = settings.cache.timeout_ms / 1000.0
            # Short timeouts and no client retries: a slow Redis must become a miss, quickly.
            client = redis.Redis.from_url(settings.cache.redis_url or "redis://127.0.0.1:6379/0",
                                          socket_timeout=timeout,
                                          socket_connect_timeout=timeout,
                                          retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.client = client

    def _get(self, keys: Sequence[str]) -> list[str | None]:
        return [v.decode("ascii") if isinstance(v, bytes) else v
                for v in self.client.mget(list(keys))]

    def _put(self, entries: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in entries.items():
            pipe.set(key, value, ex=self.ttl_s)
        pipe.execute()

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


class MemoryItemCache(ItemCache):
    """The in-process twin (embedded defaults): LRU with expiry, shared within the process."""

    backend = "memory"

    def __init__(self, settings: Settings, state: _MemoryItems | None = None) -> None:
        super().__init__(settings)
        self.state = state or _MemoryItems()

    def _get(self, keys: Sequence[str]) -> list[str | None]:
        return [self.state.get(k) for k in keys]

    def _put(self, entries: dict[str, str]) -> None:
        for key, value in entries.items():
            self.state.put(key, value, self.ttl_s)

    def close(self) -> None:
        """Nothing to release."""


class _MemoryItems:
    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self.lock:
            found = self.entries.get(key)
            if found is None or found[0] <= time.monotonic():
                self.entries.pop(key, None)
                return None
            self.entries.move_to_end(key)
            return found[1]

    def put(self, key: str, value: str, ttl_s: float) -> None:
        with self.lock:
            self.entries[key] = (time.monotonic() + ttl_s, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)


_SHARED: dict[str, _MemoryItems] = {}
_SHARED_LOCK = threading.Lock()


def item_cache_for(settings: Settings) -> ItemCache | None:
    """The item cache ``settings`` configure: Redis, the in-process twin (one per key prefix,
    so an embedded worker and its producer share it), or None when caching is off."""
    if not settings.cache.enabled:
        return None
    if settings.cache.redis_url:
        return RedisItemCache(settings)
    with _SHARED_LOCK:
        state = _SHARED.setdefault(settings.cache.key_prefix, _MemoryItems())
    return MemoryItemCache(settings, state)
