"""The response cache: policy-checked lookups and stores over Redis, or its in-memory twin."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from models.domain.cache_key import CacheKey, answering_policy, cache_key, model_fingerprint
from models.domain.cache_policy import CompiledPolicy, PolicyBook
from models.domain.errors import SluiceError, ValidationError
from models.domain.normalize import NormalizationReport
from models.domain.request import TIER_POLICIES, ChatRequest
from models.domain.result import ChatResult, Timings
from models.domain.settings import Settings
from queues.semantic_cache import Embedder, RedisVectorLog, SemanticIndex, VectorLog
from queues.single_flight import RedisSingleFlight, SingleFlight

log = logging.getLogger(__name__)
T = TypeVar("T")
_RAW, _ZLIB = b"j", b"z"
#: Values longer than this are zlib-compressed (answers are text: typically 3-5x smaller).
COMPRESS_ABOVE = 2048
_ZERO = Decimal(0)
_SCOPE_PART = re.compile(r"^[A-Za-z0-9._:\-/]{1,64}$")


def encode_value(result: ChatResult) -> bytes:
    """A stored value: one tag byte, then the result's JSON (compressed when large)."""
    data = result.model_dump_json().encode()
    return _ZLIB + zlib.compress(data, 6) if len(data) > COMPRESS_ABOVE else _RAW + data


def decode_value(raw: bytes) -> ChatResult:
    """The result in a stored value (ValueError when it is not one)."""
    tag, body = raw[:1], raw[1:]
    if tag == _ZLIB:
        body = zlib.decompress(body)
    elif tag != _RAW:
        raise ValueError(f"unknown value tag {tag!r}")
    return ChatResult.model_validate_json(body)


def artifact_version(path: str) -> str:
    """A router artifact's identity in cache keys: the SHA-256 of its bytes (a retrained file
    under the same path is another router), or ``missing:<path>`` when it cannot be read."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return f"missing:{path}"


class ResponseCacheBase(ABC):
    """Policy, keys, single-flight and fail-open over a store's few primitives."""

    #: Store errors meaning "unavailable now": the call becomes a miss, never the caller's error.
    transient: tuple[type[BaseException], ...] = (OSError,)
    #: After ``trip_after`` failures in a row the store is skipped for ``backoff_s``: a dead host
    #: then costs a few timeouts, not one per request; one slow reply (a blip) does not trip it.
    trip_after = 3
    backoff_s = 1.0
    backend = "base"

    def __init__(self, settings: Settings, *, flights: SingleFlight, vectors: VectorLog,
                 embedder: Embedder | None = None) -> None:
        self.config = settings.cache
        self.routing = settings.routing
        self.prefix = settings.cache.key_prefix
        self.policies = PolicyBook(settings.cache.features, settings.cache.default_ttl_s)
        self.flights = flights
        self.semantic = SemanticIndex(vectors, embedder)
        self.counters: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._models: dict[tuple[str, str], str] = {}
        #: Feature ladders: part of the identity of ``auto`` and the tiers where they apply.
        self.ladders = ladder_book(settings)
        #: The quality floor's moves (scheduler.quality_floor.MoveBook), or None: an org's
        #: feature's ``auto`` answers routed before its move must not answer after it.
        self.moves: Any = None
        self._down_until = 0.0
        self._failures = 0

    @abstractmethod
    def _get(self, entry: str) -> bytes | None:
        """The value at ``entry``."""

    @abstractmethod
    def _put(self, entry: str, index: str, value: bytes, ttl_ms: int, lock: str) -> bool:
        """Write ``value`` with ``ttl_ms``, cap the scope's ``index``, release ``lock``."""

    @abstractmethod
    def _delete_matching(self, pattern: str) -> int:
        """Delete keys matching the glob ``pattern``; how many."""

    def lookup(self, request: ChatRequest) -> ChatResult | None:
        """A stored answer for an equivalent request of the same scope, or None (fails open)."""
        started = time.perf_counter()
        if request.cache.mode != "use":
            return None
        policy = self.policies.get(request.feature)
        if not policy.readable(request):
            self._count("uncacheable")
            return None
        key = self.key(request, policy)
        entry = self.entry_key(key)
        raw, how = self._safe(self._get, entry), "hit"
        if raw is None and self._failures:  # the store is down: no point waiting on it
            self._count("miss")
            return None
        if raw is None and key.context:  # a semantic key (see ``key``)
            raw, how = self._semantic_lookup(key, policy), "semantic_hit"
        if raw is None and self.config.single_flight_wait_s > 0:
            raw, how = self._follow(key, entry, request.request_id), "single_flight_hit"
        result = self._decode(raw) if raw is not None else None
        if result is None:
            self._count("miss")
            return None
        self._count(how)
        return result.model_copy(update={
            "request_id": request.request_id, "cache_hit": True, "cost": _ZERO, "list_cost": _ZERO,
            "timings": Timings(total_ms=(time.perf_counter() - started) * 1000)})

    def store(self, request: ChatRequest, result: ChatResult) -> None:
        """Keep ``result`` if the feature's policy and the request's mode allow (fails open)."""
        policy = self.policies.get(request.feature)
        if result.cache_hit or not policy.writable(request):
            return
        key = self.key(request, policy)
        owner = answering_policy(request.model, self.routing, result.route.tier, result.model)
        if result.route.rung is not None and request.model in TIER_POLICIES:
            owner = request.model  # the ladder's rung answered, not a fallback
        if owner != request.model:
            # A fallback model answered: keep it under that model's identity, where only a
            # request for that model finds it, and let followers of this key go on their own.
            self._safe(self.flights.release, self.lock_key(key))
            key = self.key(request.model_copy(update={"model": owner}), policy)
        value = encode_value(result)
        if len(value) > self.config.max_value_bytes:
            self._count("too_large")
            self._safe(self.flights.release, self.lock_key(key))
            return
        ttl_ms = policy.ttl_s * 1000
        if not self._safe(self._put, self.entry_key(key), self.prefix + "i:" + key.scope, value,
                          ttl_ms, self.lock_key(key)):
            return
        self._count("store")
        if key.context:
            self._semantic(self.semantic.add, self._stream(key), key.last_user, key.id, ttl_ms)

    def abandon(self, request: ChatRequest) -> None:
        """Free the single-flight lock ``request`` took as leader when it will not reach a
        worker (refused at routing, budget or broker), so identical requests need not wait."""
        policy = self.policies.get(request.feature)
        if self.config.single_flight_wait_s > 0 and policy.readable(request):
            self._safe(self.flights.abandon, self.lock_key(self.key(request, policy)),
                       request.request_id)

    def key(self, request: ChatRequest, policy: CompiledPolicy | None = None,
            report: NormalizationReport | None = None) -> CacheKey:
        """The cache key of ``request`` under its feature's policy."""
        policy = policy or self.policies.get(request.feature)
        model = self._models.get((request.model, request.feature))
        if model is None:
            model = model_fingerprint(request.model, self.routing, request.feature,
                                      artifact_version)
            self._models[(request.model, request.feature)] = model
        if self.ladders is not None and request.model in TIER_POLICIES:
            rule = self.ladders.fingerprint(request.feature, request)
            model = f"{model}|{rule}" if rule else model
        if self.moves is not None and request.model == "auto":
            moved = self.moves.thresholds().get((request.org, request.feature))
            if moved is not None:
                model = f"{model}#moved={moved:.6f}"
        # Similar is not the same for a tool's output ("12.50" and "13.50" embed alike): a turn
        # that ends with a tool result is matched exactly, never semantically.
        semantic = policy.policy.semantic and request.messages[-1].role == "user"
        return cache_key(request, policy, model, report=report, semantic=semantic)

    def entry_key(self, key: CacheKey) -> str:
        """The store key an entry lives at."""
        return f"{self.prefix}e:{key.id}"

    def lock_key(self, key: CacheKey) -> str:
        """The single-flight lock of an entry."""
        return f"{self.prefix}l:{key.id}"

    def peek(self, request: ChatRequest) -> ChatResult | None:
        """The stored result for ``request`` as stored (no policy check, no single-flight)."""
        raw = self._safe(self._get, self.entry_key(self.key(request)))
        return self._decode(raw) if raw is not None else None

    def flush(self, *, org: str | None = None, team: str | None = None,
              feature: str | None = None, user: str | None = None) -> int:
        """Delete the entries of a scope (None matches any); how many entries went."""
        parts = []
        for name, value in (("org", org), ("team", team), ("feature", feature), ("user", user)):
            # Names never hold glob characters; checking keeps "*" from widening a flush.
            if value is not None and not _SCOPE_PART.match(value):
                raise ValidationError(f"{name} {value!r} is not a valid name (letters, digits, "
                                      "._:-/ only)", field=name)
            parts.append(value or "*")
        scope = "|".join(parts)
        removed = self._delete_matching(f"{self.prefix}e:{scope}:*")
        for kind in ("l", "s"):
            self._delete_matching(f"{self.prefix}{kind}:{scope}:*")
        self._delete_matching(f"{self.prefix}i:{scope}")
        self._count("flushed", removed)
        return removed

    def stats(self) -> dict[str, int]:
        """Counters of this process: hits by kind, misses, stores, errors, skips."""
        with self._count_lock:
            return dict(self.counters)

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self.counters[name] += n

    def _safe(self, op: Callable[..., T], *args: Any) -> T | None:
        if self._down_until and time.monotonic() < self._down_until:
            self._count("skipped")
            return None
        try:
            out = op(*args)
        except self.transient as exc:
            self._count("error")
            self._failures += 1
            if self._failures == 1:  # once per outage, not once per request
                log.warning("response cache (%s) unavailable, serving misses: %s",
                            self.backend, exc)
            if self._failures >= self.trip_after:
                self._down_until = time.monotonic() + self.backoff_s
            return None
        if self._failures:
            self._failures, self._down_until = 0, 0.0
            log.warning("response cache (%s) is back", self.backend)
        return out

    def _decode(self, raw: bytes) -> ChatResult | None:
        try:
            return decode_value(raw)
        except (ValueError, zlib.error):  # pydantic's ValidationError is a ValueError
            self._count("corrupt")
            return None

    def _follow(self, key: CacheKey, entry: str, owner: str) -> bytes | None:
        wait_s = self.config.single_flight_wait_s
        lock = self.lock_key(key)
        leader = self._safe(self.flights.acquire, lock, int(wait_s * 1000), owner)
        if leader is None or leader:
            return None
        self._count("single_flight_wait")
        return self._safe(self.flights.wait, entry, lock, wait_s)

    def _stream(self, key: CacheKey) -> str:
        return f"{self.prefix}s:{key.scope}:{key.context}"

    def _semantic_lookup(self, key: CacheKey, policy: CompiledPolicy) -> bytes | None:
        found = self._semantic(self.semantic.find, self._stream(key), key.last_user,
                               policy.policy.semantic_threshold)
        if not found:
            return None
        return self._safe(self._get, f"{self.prefix}e:{found[0]}")

    def _semantic(self, op: Callable[..., T], *args: Any) -> T | None:
        try:
            return self._safe(op, *args)
        except (SluiceError, ImportError, RuntimeError, ValueError) as exc:
            # No embeddings model here (or it failed): the exact cache still serves.
            self._count("semantic_error")
            log.warning("semantic cache lookup failed, exact matches only: %s", exc)
            return None


# One round trip per store. It deletes evicted entries it was not handed as KEYS: fine on one
# Redis; a Redis Cluster would need the scope as a hash tag in every key.
_STORE = """
local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('DEL', KEYS[3])
return extra
"""


class RedisResponseCache(ResponseCacheBase):
    """Entries in Redis: one GET per lookup; a store is one script (set, cap scope, unlock)."""

    backend = "redis"

    def __init__(self, settings: Settings, *, client: Any = None,
                 embedder: Embedder | None = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        url = settings.cache.redis_url
        if client is None:
            timeout = settings.cache.timeout_ms / 1000.0
            # Short timeouts and no client retries: a slow Redis must become a miss, quickly.
            client = redis.Redis.from_url(url or "redis://127.0.0.1:6379/0",
                                          socket_timeout=timeout, socket_connect_timeout=timeout,
                                          retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.client = client
        self.transient = (redis.RedisError, OSError)
        self._store_script = client.register_script(_STORE)
        super().__init__(settings, flights=RedisSingleFlight(client),
                         vectors=RedisVectorLog(client), embedder=embedder)

    def _get(self, entry: str) -> bytes | None:
        value: bytes | None = self.client.get(entry)
        return value

    def _put(self, entry: str, index: str, value: bytes, ttl_ms: int, lock: str) -> bool:
        self._store_script(keys=[entry, index, lock],
                           args=[value, ttl_ms, int(time.time() * 1000),
                                 self.config.max_entries_per_scope])
        return True

    def _delete_matching(self, pattern: str) -> int:
        removed = 0
        batch: list[bytes] = []
        for name in self.client.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                removed += int(self.client.delete(*batch))
                batch.clear()
        if batch:
            removed += int(self.client.delete(*batch))
        return removed

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


def ladder_book(settings: Settings) -> Any:
    """The ladders ``settings`` configure (None when there are none)."""
    if not (settings.routing.ladders or settings.routing.ladders_path):
        return None
    from scheduler.router.ladder_book import LadderBook

    return LadderBook.from_settings(settings.routing)


def build_response_cache(settings: Settings) -> ResponseCacheBase | None:
    """The response cache ``settings`` configure: Redis, the in-process twin, or None if off."""
    if not settings.cache.enabled:
        return None
    if settings.cache.redis_url:
        return RedisResponseCache(settings)
    from queues.memory_cache import MemoryResponseCache, shared_memory_state

    return MemoryResponseCache(settings, state=shared_memory_state(settings.cache.key_prefix))
