"""Gemini explicit context caches, decided per prefix from its observed reuse, shared by workers.

Per prefix fingerprint (owner scope, model, static part) Redis keeps the requests of the last
TTL window (a sorted set), the implicit hit rate seen without an explicit cache, and the live
cache entry (name, expiry, tokens, owner), so every worker reuses the cache one of them made.
A request creates a cache when :func:`models.domain.context_cache.pays` says so (a lock makes
one worker do it), renews it by the same rule once less than half its TTL is left, and
:meth:`ExplicitCaches.sweep` deletes caches whose prefix went cold. Every storage period is
booked (reserved before the provider call, billed after) through ``Books``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.context_cache import pays
from models.domain.errors import SluiceError
from models.domain.request import ChatRequest
from workers.providers.gemini_shaping import cacheable, static_parts
from workers.providers.shaping import static_fingerprint, static_tokens

log = logging.getLogger("sluice.gemini_cache")


@dataclass(frozen=True)
class Period:
    """One billed stretch of a cache's life: created (its tokens processed), renewed, or the
    unused rest credited when it is deleted early (negative seconds)."""

    cache: str
    seq: int
    kind: str  # create | renew | delete
    model: ModelSpec
    tokens: int
    seconds: float
    owner: dict[str, str]
    fingerprint: str


class Books(Protocol):
    """Where storage is paid for: hold before the provider call, book after, or let go."""

    def hold(self, period: Period) -> Any:
        """Reserve the period's cost on the owner's budgets (raises BudgetExceeded)."""

    def book(self, period: Period, hold: Any) -> None:
        """Bill the period (a ledger row of its own) and settle the hold."""

    def drop(self, hold: Any) -> None:
        """The provider call failed: release the hold."""

    def lost(self, period: Period, hold: Any) -> None:
        """The provider call's outcome is unknown (it may have made the cache): charge the
        hold, estimated."""


class ExplicitCaches:
    """The explicit-cache decision and its provider calls, for one worker process."""

    def __init__(self, redis: Any, client: Any, books: Books, catalogue: Catalogue, *,
                 ttl_s: float = 3600.0,
                 key_prefix: str = "", clock: Callable[[], float] = time.time,
                 cold_after_s: float | None = None) -> None:
        self.redis, self.client, self.books = redis, client, books
        self.catalogue = catalogue
        self.ttl_s = ttl_s
        self.prefix = f"{key_prefix}gcache:"
        self.clock = clock
        #: No request for this long and the prefix is cold (default: a quarter of the TTL).
        self.cold_after_s = ttl_s / 4 if cold_after_s is None else cold_after_s
        #: The decision (models.domain.context_cache.pays); a benchmark may force it.
        self.rule = pays

    # --- the per-request path ---

    def fingerprint(self, request: ChatRequest, model: ModelSpec) -> str:
        """Owner scope, model and static part: one explicit cache per feature and prefix."""
        scope = f"{request.org}/{request.team}/{request.feature}"
        raw = f"{scope}\x00{model.name}\x00{static_fingerprint(request.static)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def for_request(self, request: ChatRequest, model: ModelSpec) -> str:
        """The cache name to send (``cachedContents/...``), or "" for implicit caching."""
        if not cacheable(request) or model.price.storage_per_hour <= 0:
            return ""
        tokens = static_tokens(request.static)
        if tokens < model.min_cacheable_tokens:
            return ""
        fp = self.fingerprint(request, model)
        now = self.clock()
        n = self._count(fp, request.request_id, now)
        hit = self.implicit_rate(fp)
        entry = self._entry(fp)
        if entry and float(entry["expires"]) > now + 5:
            left = float(entry["expires"]) - now
            if left < self.ttl_s / 2 and self.rule(model, tokens, n, self.ttl_s, hit,
                                                   creating=False):
                self._renew(fp, entry, model, now)
            return str(entry["name"])
        if self.rule(model, tokens, n, self.ttl_s, hit, creating=True):
            return self._create(fp, request, model, tokens, now)
        return ""

    def note_implicit(self, request: ChatRequest, model: ModelSpec, cached_tokens: int) -> None:
        """Record what implicit caching gave a request sent without an explicit cache."""
        if not cacheable(request) or model.price.storage_per_hour <= 0:
            return
        tokens = static_tokens(request.static)
        key = f"{self.prefix}{self.fingerprint(request, model)}:implicit"
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "requests", 1)
        pipe.hincrby(key, "prefix_tokens", tokens)
        pipe.hincrby(key, "hit_tokens", min(cached_tokens, tokens))
        pipe.expire(key, 86_400)
        pipe.execute()

    def implicit_rate(self, fp: str) -> float:
        """Share of the prefix's tokens implicit caching served, 0 before anything was seen."""
        raw = self.redis.hgetall(f"{self.prefix}{fp}:implicit") or {}
        seen = int(raw.get(b"prefix_tokens", 0) or 0)
        return int(raw.get(b"hit_tokens", 0) or 0) / seen if seen else 0.0

    # --- periodic ---

    def sweep(self) -> int:
        """Delete the caches whose prefix went cold (no request for ``cold_after_s``, or too
        few in the TTL window to pay their storage); the unused storage is credited."""
        deleted, now = 0, self.clock()
        for raw in self.redis.smembers(f"{self.prefix}live"):
            fp = raw.decode() if isinstance(raw, bytes) else str(raw)
            entry = self._entry(fp)
            if not entry:
                self.redis.srem(f"{self.prefix}live", fp)
                continue
            expires = float(entry["expires"])
            last, n = self._recent(fp, now)
            model = self._model_of(entry)
            cold = (now - last > self.cold_after_s or not self.rule(
                model, int(entry["tokens"]), n, self.ttl_s, self.implicit_rate(fp),
                creating=False))
            if expires <= now:
                self._forget(fp)
            elif cold and self._lock(fp):
                try:
                    self.client.caches.delete(name=entry["name"])
                except Exception as exc:  # noqa: BLE001 - it expires on its own; retry next sweep
                    log.warning("could not delete cold cache %s: %s", entry["name"], exc)
                    continue
                finally:
                    self._unlock(fp)
                # Storage stopped when the provider deleted it: credit the rest from then.
                self._book(fp, entry, model, "delete", -max(expires - self.clock(), 0.0))
                self._forget(fp)
                deleted += 1
        return deleted

    # --- internals ---

    def _count(self, fp: str, request_id: str, now: float) -> int:
        key = f"{self.prefix}{fp}:hits"
        pipe = self.redis.pipeline()
        pipe.zadd(key, {request_id: now})
        pipe.zremrangebyscore(key, "-inf", now - self.ttl_s)
        pipe.zcard(key)
        pipe.expire(key, int(self.ttl_s * 2))
        return int(pipe.execute()[2])

    def _recent(self, fp: str, now: float) -> tuple[float, int]:
        key = f"{self.prefix}{fp}:hits"
        self.redis.zremrangebyscore(key, "-inf", now - self.ttl_s)
        last = self.redis.zrange(key, -1, -1, withscores=True)
        return (float(last[0][1]) if last else float("-inf")), int(self.redis.zcard(key))

    def _entry(self, fp: str) -> dict[str, str]:
        raw = self.redis.hgetall(f"{self.prefix}{fp}") or {}
        return {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes)
                else v for k, v in raw.items()}

    def _model_of(self, entry: dict[str, str]) -> ModelSpec:
        return self.catalogue.get(entry["model"])

    def _lock(self, fp: str) -> bool:
        return bool(self.redis.set(f"{self.prefix}{fp}:lock", "1", nx=True, px=30_000))

    def _unlock(self, fp: str) -> None:
        self.redis.delete(f"{self.prefix}{fp}:lock")

    def _create(self, fp: str, request: ChatRequest, model: ModelSpec, tokens: int,
                now: float) -> str:
        if not self._lock(fp):
            return ""  # another worker is creating it: this request goes implicit
        owner = {"org": request.org, "team": request.team, "feature": request.feature,
                 "lane": request.lane}
        period = Period("", 0, "create", model, tokens, self.ttl_s, owner, fp)
        try:
            hold = self.books.hold(period)
        except SluiceError as exc:  # a budget cannot take the storage: stay implicit
            self._unlock(fp)
            log.info("no explicit cache for %s: %s", request.feature, exc.message)
            return ""
        try:
            body = static_parts(request.static)
            config: dict[str, Any] = {k: v for k, v in body.items() if k != "contents"}
            if body["contents"]:
                config["contents"] = body["contents"]
            config.update(ttl=f"{int(self.ttl_s)}s", display_name=f"sluice-{fp[:12]}")
            made = self.client.caches.create(model=model.api_name or model.name, config=config)
        except Exception as exc:  # noqa: BLE001 - the request goes on with implicit caching
            self._failed(period, hold, exc)
            self._unlock(fp)
            log.warning("could not create an explicit cache for %s: %s", request.feature, exc)
            return ""
        # The provider's TTL runs from its answer, not from before the budget hold.
        entry = {"name": made.name, "model": model.name,
                 "expires": repr(self.clock() + self.ttl_s),
                 "tokens": str(tokens), "seq": "0", **owner}
        try:
            self.books.book(Period(made.name, 0, "create", model, tokens, self.ttl_s, owner, fp),
                            hold)
        finally:
            pipe = self.redis.pipeline()
            pipe.hset(f"{self.prefix}{fp}", mapping=entry)
            pipe.expire(f"{self.prefix}{fp}", int(self.ttl_s) + 86_400)
            pipe.sadd(f"{self.prefix}live", fp)
            pipe.execute()
            self._unlock(fp)
        return str(made.name)

    def _renew(self, fp: str, entry: dict[str, str], model: ModelSpec, now: float) -> None:
        if not self._lock(fp):
            return
        try:
            old = float(entry["expires"])
            seq = int(entry.get("seq", 0)) + 1
            owner = {k: entry[k] for k in ("org", "team", "feature", "lane")}
            period = Period(entry["name"], seq, "renew", model, int(entry["tokens"]),
                            now + self.ttl_s - old, owner, fp)
            try:
                hold = self.books.hold(period)
            except SluiceError as exc:
                log.info("explicit cache %s not renewed: %s", entry["name"], exc.message)
                return
            try:
                self.client.caches.update(name=entry["name"],
                                          config={"ttl": f"{int(self.ttl_s)}s"})
            except Exception as exc:  # noqa: BLE001 - it lives on until its expiry
                self._failed(period, hold, exc)
                log.warning("could not renew explicit cache %s: %s", entry["name"], exc)
                return
            self.books.book(period, hold)
            self.redis.hset(f"{self.prefix}{fp}",
                            mapping={"expires": repr(self.clock() + self.ttl_s),
                                     "seq": str(seq)})
        finally:
            self._unlock(fp)

    def _failed(self, period: Period, hold: Any, exc: Exception) -> None:
        """A refused call costs nothing; one whose answer never came (a timeout, a dropped
        connection) may have made or renewed the cache at the provider, where nobody can
        delete a cache whose name never came back: it lives its TTL and is billed, so the
        hold (that whole period) is charged, estimated."""
        from workers.providers.errors import MAY_BILL
        from workers.providers.gemini import map_genai_error

        if map_genai_error("google", exc).details.get("billed") == MAY_BILL:
            self.books.lost(period, hold)
        else:
            self.books.drop(hold)

    def _book(self, fp: str, entry: dict[str, str], model: ModelSpec, kind: str,
              seconds: float) -> None:
        seq = int(entry.get("seq", 0)) + 1
        owner = {k: entry[k] for k in ("org", "team", "feature", "lane")}
        period = Period(entry["name"], seq, kind, model, int(entry["tokens"]), seconds, owner, fp)
        self.books.book(period, None)

    def _forget(self, fp: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(f"{self.prefix}{fp}")
        pipe.srem(f"{self.prefix}live", fp)
        pipe.execute()


def storage_amount(period: Period) -> Decimal:
    """What a period costs: storage for its seconds, and on creation the tokens at input."""
    from models.domain.cost import cost_of, storage_cost
    from models.domain.usage import Usage

    amount = storage_cost(period.tokens, abs(period.seconds), period.model)
    if period.seconds < 0:
        amount = -amount
    if period.kind == "create":
        amount += cost_of(Usage(input_uncached=period.tokens), period.model)
    return amount
