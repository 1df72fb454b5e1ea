"""Rate-limit admission in Redis: one Lua script checks and adds to every window, all or nothing.

Every applicable limit (org, team, key, feature, model, deployment; requests and tokens) is one
counter per fixed window. The script reads them all, refuses on the first without room
(counting the refusal by limit), else adds to all: no read-modify-write race between
producers, so no window admits more than its limit. Tokens are the estimate (prompt +
``max_tokens``) at admission; settlement adds the difference to the actual count. Redis
unreachable means nothing is admitted (RateLimiterUnavailable): limits fail closed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.domain.errors import LedgerError, RateLimited, RateLimiterUnavailable
from models.domain.ratelimit import Charge, Limited, RateLimit, applicable_limits, charges_for
from models.domain.result import Route

log = logging.getLogger("sluice.ratelimit")

# KEYS[1..n]: window counters, KEYS[n+1]: the refusal tally. ARGV: per counter limit, cost,
# time to live (ms); then the refusal tally's field per counter.
ACQUIRE = """
local n = #KEYS - 1
local seen = {}
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  seen[i] = cur
  if cur + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    redis.call('HINCRBY', KEYS[n + 1], ARGV[3 * n + i], 1)
    for j = i + 1, n do seen[j] = tonumber(redis.call('GET', KEYS[j]) or '0') end
    return {0, i, unpack(seen)}
  end
end
for i = 1, n do
  seen[i] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[3 * i]) end
end
return {1, 0, unpack(seen)}
"""
# Once per KEYS[1] (a mark, kept ARGV[1] s: a redelivered task corrects nothing twice), add
# ARGV[i] to KEYS[i] where the window still exists (a refund, or a settlement's correction):
# a window that ended is not brought back.
ADD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1
"""
#: How long a refund's or settlement's mark is kept: past any window a grant can touch.
MARK_TTL_S = 2 * 86_400


@dataclass(frozen=True)
class Grant:
    """What one admission added: ``(counter, kind, cost)`` per window, for refund or settling;
    ``id`` names it, so each of its corrections is applied once however often it is asked."""

    counters: tuple[tuple[str, str, int], ...]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form, carried on the envelope to the worker that settles."""
        return {"id": self.id, "counters": [list(c) for c in self.counters]}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Grant | None:
        """The grant an envelope carries (None: none)."""
        if not data:
            return None
        return cls(tuple((str(k), str(kind), int(cost)) for k, kind, cost in data["counters"]),
                   str(data["id"]))


class LimitBook:
    """Which rate limits exist (the ``rate_limits`` table and keys' own), cached ``ttl_s``."""

    def __init__(self, sessions: sessionmaker[Session], *, ttl_s: float = 1.0) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._index: dict[tuple[str, str, str], list[RateLimit]] = {}
        self._at = float("-inf")
        self._lock = threading.Lock()

    def index(self) -> dict[tuple[str, str, str], list[RateLimit]]:
        """(org, scope, key) -> limits; reloaded at most every ``ttl_s``."""
        if time.monotonic() - self._at > self.ttl_s:
            with self._lock:
                if time.monotonic() - self._at > self.ttl_s:
                    try:
                        self._index = self._load()
                    except SQLAlchemyError as exc:
                        # Fail closed, as budget admission does: a limit set since the last
                        # read (or a key's lowered one) must not be skipped.
                        raise LedgerError(
                            f"could not read the rate limits ({type(exc).__name__}); nothing "
                            "was dispatched; check the database (SLUICE_DATABASE__URL) or run "
                            "`sluice migrate`, then retry") from exc
                    self._at = time.monotonic()
        return self._index

    def invalidate(self) -> None:
        """Reload on the next admission (after setting limits in this process)."""
        self._at = float("-inf")

    def _load(self) -> dict[tuple[str, str, str], list[RateLimit]]:
        from models.db.api_keys import ApiKeyRow
        from models.db.rate_limits import RateLimitRow, to_limit

        index: dict[tuple[str, str, str], list[RateLimit]] = {}
        with self.sessions() as s:
            for row in s.scalars(select(RateLimitRow)):
                lim = to_limit(row)
                index.setdefault((lim.org, lim.scope, lim.key), []).append(lim)
            keys = s.execute(select(ApiKeyRow.id, ApiKeyRow.org, ApiKeyRow.rpm, ApiKeyRow.tpm)
                             .where(ApiKeyRow.revoked_at.is_(None),
                                    (ApiKeyRow.rpm.is_not(None)) | (ApiKeyRow.tpm.is_not(None))))
            for kid, org, rpm, tpm in keys:
                index.setdefault((org, "key", kid), []).append(RateLimit("key", kid, org, rpm,
                                                                         tpm))
        return index


@dataclass
class RedisRateLimiter:
    """Admits requests under every applicable rate limit at once (see the module docstring)."""

    client: Redis
    limits: Callable[[], dict[tuple[str, str, str], list[RateLimit]]]
    prefix: str = ""
    clock: Callable[[], float] = time.time
    #: Where the limits come from, when built from the database (its cache can be dropped).
    book: LimitBook | None = None
    _acquire: Any = field(init=False, repr=False)
    _add: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # register_script sends EVALSHA and reloads the script after a Redis restart.
        self._acquire = self.client.register_script(ACQUIRE)
        self._add = self.client.register_script(ADD)

    def charges(self, request: Limited, route: Route, tokens: int) -> list[Charge]:
        """The window counters ``request`` adds to (empty: no limit applies)."""
        return charges_for(applicable_limits(request, route, self.limits()), tokens)

    def acquire(self, request: Limited, route: Route, tokens: int) -> Grant | None:
        """Add one request and ``tokens`` to every applicable window, or to none.

        Returns the Grant (None when no limit applies); raises RateLimited naming the limit
        without room and the wait, or RateLimiterUnavailable when Redis cannot be reached.
        """
        charges = self.charges(request, route, tokens)
        return self.acquire_charges(charges) if charges else None

    def acquire_charges(self, charges: list[Charge]) -> Grant:
        """:meth:`acquire` for charges already worked out."""
        now = self.clock()
        keys = [c.counter(self.prefix, now) for c in charges]
        argv: list[Any] = []
        for c in charges:
            # Kept one window past its end: a settlement's correction may still land.
            ttl_ms = int((c.resets_in(now) + c.window_s) * 1000)
            argv += [c.limit, c.cost, ttl_ms]
        argv += [f"{c.name}:{c.kind}" for c in charges]
        try:
            out = self._acquire(keys=[*keys, self.refusals_key], args=argv)
        except RedisError as exc:
            raise RateLimiterUnavailable(
                f"the rate limiter's Redis is unreachable ({type(exc).__name__}): nothing was "
                "admitted (limits fail closed); retry shortly, or check SLUICE_BROKER__URL"
            ) from exc
        ok, at, counts = int(out[0]), int(out[1]), [int(v) for v in out[2:]]
        if ok:
            return Grant(tuple((k, c.kind, c.cost) for k, c in zip(keys, charges)))
        raise refused(charges, at - 1, counts, now)

    def refund(self, grant: Grant | None) -> None:
        """Take back what ``grant`` added (the request was refused later, or never sent);
        once, however often asked."""
        if grant is not None:
            self._apply(grant.id, "refund", grant.counters,
                        [-cost for _k, _kind, cost in grant.counters])

    def settle(self, grant: Grant | None, tokens: int) -> None:
        """Correct the token windows of ``grant`` from the estimate to ``tokens`` used; once
        (a redelivered task's second answer corrects nothing)."""
        if grant is None:
            return
        touched = tuple(c for c in grant.counters if c[1] == "tokens")
        if touched:
            self._apply(grant.id, "settle", touched,
                        [tokens - cost for _k, _kind, cost in touched])

    def _apply(self, grant_id: str, what: str, counters: tuple[tuple[str, str, int], ...],
               deltas: list[int]) -> None:
        mark = f"{self.prefix}rl:done:{what}:{grant_id}"
        try:
            self._add(keys=[mark, *(k for k, _kind, _c in counters)],
                      args=[MARK_TTL_S, *deltas])
        except RedisError as exc:
            # Over-counting errs on the safe side and ends with the window: never an error.
            log.warning(
                "could not correct rate-limit windows: %s", exc)

    @property
    def refusals_key(self) -> str:
        """The hash counting refusals by ``limit:kind`` (for Prometheus)."""
        return f"{self.prefix}rl:refusals"

    def count_refusal(self, name: str, kind: str) -> None:
        """Count a refusal decided elsewhere (a budget's) beside the rate limits' (best effort:
        a count, never the request's outcome)."""
        try:
            self.client.hincrby(self.refusals_key, f"{name}:{kind}", 1)
        except RedisError as exc:
            log.debug("could not count a refusal of %s: %s", name, exc)

    def refusal_counts(self) -> dict[str, int]:
        """Refusals so far by ``limit:kind``."""
        raw = self.client.hgetall(self.refusals_key)
        return {_s(k): int(v) for k, v in raw.items()}

    def used(self, charge: Charge) -> int:
        """What the current window of ``charge``'s limit holds (for headroom gauges)."""
        return int(self.client.get(charge.counter(self.prefix, self.clock())) or 0)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def refused(charges: list[Charge], at: int, counts: list[int], now: float) -> RateLimited:
    """The RateLimited error for the charge at ``at`` having no room, with both kinds of the
    same limit (what the doors' ``x-ratelimit-*`` headers report)."""
    bad = charges[at]
    wait = round(bad.resets_in(now), 3)
    state: dict[str, dict[str, Any]] = {}
    for c, used in zip(charges, counts):
        if c.name == bad.name and c.window_s == bad.window_s:
            state[c.kind] = {"limit": c.limit, "remaining": max(c.limit - used, 0),
                             "reset_s": round(c.resets_in(now), 3)}
    unit = "requests" if bad.kind == "requests" else "tokens"
    return RateLimited(
        f"rate limit {bad.name} is reached: {bad.limit} {unit} per {bad.window_s} s "
        f"(this request needs {bad.cost}); retry after {wait:g} s", limit=bad.name,
        retry_after_s=wait, kind=bad.kind, window_s=bad.window_s, rate=state)


def rate_limiter_for(client: Redis, sessions: sessionmaker[Session], prefix: str = ""
                     ) -> RedisRateLimiter:
    """A limiter over the limits in the database (cached 1 s) and ``client``'s Redis."""
    book = LimitBook(sessions)
    return RedisRateLimiter(client, book.index, prefix=prefix, book=book)


def build_rate_limiter(settings: Any, sessions: sessionmaker[Session]
                       ) -> RedisRateLimiter | None:
    """The limiter on ``settings``' state Redis; None without one (nothing is rate limited:
    the embedded, Redis-less setup)."""
    url = settings.broker.state_url() or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return rate_limiter_for(client, sessions, settings.broker.key_prefix)
