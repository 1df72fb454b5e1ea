"""Admission with rate limits and budgets together, under concurrency, beside a Redis round trip.

    python -m ops.bench.governance_bench [--producers 16] [--per-producer 300]

A fresh PostgreSQL database (SLUICE_TEST_PG_URL or the local one) and the local Redis
(SLUICE_TEST_REDIS_URL, a prefix of its own). Every request meets four rate limits (its key's
requests, its team's tokens, its model's requests, its deployment's requests: one Lua script)
and three budgets (org, team, feature: one PostgreSQL statement), as the producer takes them:
the windows inside the reservation's transaction, after the budgets fit. Demand is
split over two keys: one runs out of its requests per minute, the other into the feature
budget, so the run refuses on both. Each producer runs the Gateway's own admission path
(routing, counting, the limiter, the reservation) with the broker publish left out. Prints
p50/p99 of that path, of its rate-limit step alone, and of a bare Redis PING from the same
threads in the same run; the over-admission of every window (what it holds beyond its limit),
which must be 0; and the budget overspend.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

#: Key ``a`` runs out of requests; key ``b`` (the other half of the traffic) runs into the
#: feature budget, sized at run time to about 3/8 of the demand.
LIMITS = {"key_rpm": 600, "key_b_rpm": 100_000, "team_tpm": 10_000_000, "model_rpm": 100_000,
          "deployment_rpm": 100_000}


def _redis_url() -> str:
    return os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/") + "/14"


def _gateway(url: str, prefix: str) -> Any:
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import BrokerSettings, DatabaseSettings, Settings
    from queues.producer import Gateway
    from scheduler.admission import build_admission
    from scheduler.ratelimit import build_rate_limiter

    settings = Settings(database=DatabaseSettings(url=url),
                        broker=BrokerSettings(url=_redis_url(), key_prefix=prefix))
    sessions = session_factory(make_engine(url, pool_size=4))

    class Unsent(Gateway):
        """The Gateway's admission path; the publish is the broker's cost, left out here."""

        def _send(self, envelope: Any, countdown: float | None = None) -> Any:
            return SimpleNamespace(id=envelope.request.request_id)

    return Unsent(settings, admission=build_admission(settings, sessions),
                  limiter=build_rate_limiter(settings, sessions))


def _ask(key_id: str) -> dict[str, Any]:
    return {"org": "bench-org", "team": "bench-team", "feature": "bench-feature",
            "api_key": key_id, "model": "cheap", "max_tokens": 64, "lane": "interactive",
            "request_id": uuid.uuid4().hex, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": "Title for a blue mug"}]}


def _timed(limiter: Any, into: list[float]) -> None:
    """Record how long the limiter's own step (the script's round trip) takes."""
    acquire = limiter.acquire_charges  # what the admission's rate step calls

    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return acquire(*args)
        finally:
            into.append((time.perf_counter() - t0) * 1000)

    limiter.acquire_charges = timed


def _produce(gw: Any, key_id: str, n: int, start: threading.Event, out: list[Any],
             lock: threading.Lock) -> None:
    from models.domain.errors import BudgetExceeded, RateLimited

    lat: list[float] = []
    grants: list[Any] = []
    refused: Counter[str] = Counter()
    start.wait()
    for _ in range(n):
        data = _ask(key_id)
        t0 = time.perf_counter()
        try:
            handle = gw.submit(data)
        except RateLimited:
            refused["rate"] += 1
        except BudgetExceeded:
            refused["budget"] += 1
        else:
            grants.append(handle.request_id)
        lat.append((time.perf_counter() - t0) * 1000)
    with lock:
        out.append((lat, grants, refused))


def _ping_floor(client: Any, producers: int, n: int) -> list[float]:
    lat: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        mine = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.ping()
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def _solo(client: Any, n: int = 1000) -> tuple[list[float], list[float]]:
    """One thread, nothing else running: the script over the same four windows (limits too
    large to refuse, on a prefix of its own) and a PING, alternating."""
    from models.domain.ratelimit import RateLimit
    from models.domain.request import ChatRequest
    from models.domain.result import Route
    from scheduler.ratelimit import RedisRateLimiter

    big = 10**12
    limits = [RateLimit("key", "solo", rpm=big), RateLimit("team", "t", tpm=big),
              RateLimit("model", "gpt-4o-mini", "*", rpm=big),
              RateLimit("deployment", "openai/gpt-4o-mini", "*", rpm=big)]
    index = {(lim.org, lim.scope, lim.key): [lim] for lim in limits}
    rl = RedisRateLimiter(client, lambda: index, prefix=f"govsolo{uuid.uuid4().hex[:6]}:")
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    req = ChatRequest(team="t", feature="f", api_key="solo",
                      messages=[{"role": "user", "content": "hi"}])
    script: list[float] = []
    ping: list[float] = []
    for i in range(n + 50):
        t0 = time.perf_counter()
        rl.acquire(req, route, 10)
        t1 = time.perf_counter()
        client.ping()
        t2 = time.perf_counter()
        if i >= 50:  # after warming the connection and the script cache
            script.append((t1 - t0) * 1000)
            ping.append((t2 - t1) * 1000)
    for k in client.scan_iter(f"{rl.prefix}*"):
        client.delete(k)
    return script, ping


def _windows(client: Any, prefix: str) -> dict[str, int]:
    """Every window counter the run left, by key."""
    return {k.decode(): int(client.get(k) or 0) for k in client.scan_iter(f"{prefix}rl:*")
            if b":done:" not in k and not k.endswith(b"refusals")}


def run(producers: int = 16, per_producer: int = 300) -> dict[str, Any]:
    """One measured run; returns the numbers ``main`` prints."""
    import redis

    from models.db.api_keys import create_key
    from models.db.budgets import get_budget, set_budget
    from models.db.engine import make_engine, session_factory
    from models.db.rate_limits import set_limit
    from models.domain.ratelimit import RateLimit
    from ops.bench.harness import scratch_database, summary

    prefix = f"govbench{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(_redis_url())
    with scratch_database() as url:
        sessions = session_factory(make_engine(url))
        demand = producers * per_producer
        with sessions() as s:
            _token, key = create_key(s, team="bench-team", org="bench-org",
                                     rpm=LIMITS["key_rpm"])
            _token, key_b = create_key(s, team="bench-team", org="bench-org",
                                       rpm=LIMITS["key_b_rpm"])
            set_limit(s, RateLimit("team", "bench-team", "bench-org", tpm=LIMITS["team_tpm"]))
            set_limit(s, RateLimit("model", "gpt-4o-mini", "*", rpm=LIMITS["model_rpm"]))
            set_limit(s, RateLimit("deployment", "openai/gpt-4o-mini", "*",
                                   rpm=LIMITS["deployment_rpm"]))
            set_budget(s, "org", "bench-org", "daily", hard=Decimal(1000))
            set_budget(s, "team", "bench-team", "daily", hard=Decimal(1000), org="bench-org")
            s.commit()
        gws = [_gateway(url, prefix) for _ in range(producers)]
        # Measure what one admission reserves, then size the feature budget to about half the
        # demand beyond the key's window: both limits refuse by the end.
        gws[0].submit(_ask(key_b.id))
        with sessions() as s:
            amount = _probe_amount(s)
            set_budget(s, "feature", "bench-feature", "total", org="bench-org",
                       hard=amount * (demand * 3 // 8))
            s.commit()
        step: list[float] = []
        for gw in gws:  # warm every pool, the tokenizer, the script and the limit caches
            gw.admission.invalidate()
            gw.limiter.book.invalidate()
            gw.limiter.limits()
            _timed(gw.limiter, step)
        solo_script, solo_ping = _solo(client)
        floor = _ping_floor(client, producers, per_producer)
        start, lock, out = threading.Event(), threading.Lock(), []
        threads = [threading.Thread(target=_produce, args=(
            gw, (key if i % 2 else key_b).id, per_producer, start, out, lock))
            for i, gw in enumerate(gws)]
        for t in threads:
            t.start()
        # The key's window is a clock minute: a run across a minute's edge would get two of
        # them and refuse nothing by rate. Start early in a minute (a run takes ~20 s here).
        if time.time() % 60 > 30:
            time.sleep(60 - time.time() % 60 + 0.1)
        t0 = time.perf_counter()
        start.set()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        lat = [x for got, _g, _r in out for x in got]
        admitted = sum(len(g) for _l, g, _r in out) + 1  # and the probe
        refused = sum((r for _l, _g, r in out), Counter())
        windows = _windows(client, prefix)
        caps = {f"key:{key.id}": LIMITS["key_rpm"], f"key:{key_b.id}": LIMITS["key_b_rpm"],
                "team:bench-team": LIMITS["team_tpm"], "model:gpt-4o-mini": LIMITS["model_rpm"],
                "deployment:openai/gpt-4o-mini": LIMITS["deployment_rpm"]}
        # A counter is <prefix>rl:<org>:<scope>:<key>:<kind>:<window_s>:<index>.
        over = sum(max(0, v - caps[":".join(k[len(prefix) + 3:].split(":")[1:-3])])
                   for k, v in windows.items())
        key_windows = {k: v for k, v in windows.items() if ":key:" in k}
        with sessions() as s:
            feat = get_budget(s, "feature", "bench-feature", "total", org="bench-org")
        assert feat is not None
        for gw in gws:
            gw.admission.close()
        client.close()
        return {"admission": summary(lat), "floor": summary(floor), "wall_s": wall,
                "step": summary(step), "solo_script": summary(solo_script),
                "solo_ping": summary(solo_ping),
                "per_s": len(lat) / wall, "demand": demand, "admitted": admitted,
                "refused": refused, "over_admitted": over,
                "key_window_total": sum(key_windows.values()),
                "overspend": max(Decimal(0), feat.spent + feat.reserved - feat.hard_limit)}


def _probe_amount(s: Any) -> Decimal:
    """What the one reservation so far (the probe's) holds: one admission's worst case."""
    from sqlalchemy import select

    from models.db.budgets import ReservationRow

    return Decimal(s.scalars(select(ReservationRow.amount)).one())


def main() -> None:
    """Run and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--per-producer", type=int, default=300)
    args = parser.parse_args()
    r = run(args.producers, args.per_producer)
    a, f = r["admission"], r["floor"]
    print(f"admission with rate limits and budgets, {args.producers} concurrent producers: "
          "4 windows (Redis, one script) + 3 budgets (PostgreSQL) per request")
    print(f"  admit (Gateway path)  p50 {a['p50']:.3f} ms   p99 {a['p99']:.3f} ms   "
          f"n={int(a['n'])}   {r['per_s']:,.0f} decisions/s")
    st = r["step"]
    print(f"  rate-limit script     p50 {st['p50']:.3f} ms   p99 {st['p99']:.3f} ms   (its "
          "share of the path: every window, all or nothing)")
    print(f"  floor Redis PING      p50 {f['p50']:.3f} ms   p99 {f['p99']:.3f} ms   (same "
          "threads, same run)")
    print(f"  ratio to the PING: path p50 {a['p50'] / f['p50']:.1f}x p99 "
          f"{a['p99'] / f['p99']:.1f}x; script p50 {st['p50'] / f['p50']:.1f}x p99 "
          f"{st['p99'] / f['p99']:.1f}x")
    ss, sp = r["solo_script"], r["solo_ping"]
    print(f"  one thread alone: script p50 {ss['p50']:.3f} ms p99 {ss['p99']:.3f} ms, PING p50 "
          f"{sp['p50']:.3f} ms p99 {sp['p99']:.3f} ms: {ss['p50'] / sp['p50']:.1f}x / "
          f"{ss['p99'] / sp['p99']:.1f}x")
    print(f"  demand {r['demand'] + 1}: admitted {r['admitted']}, refused by a rate limit "
          f"{r['refused']['rate']}, by a budget {r['refused']['budget']}")
    print(f"  key windows hold {r['key_window_total']} == admitted {r['admitted']}: "
          f"{r['key_window_total'] == r['admitted']} (a refusal holds no window)")
    print(f"  over-admission {r['over_admitted']}  "
          f"({'OK' if r['over_admitted'] == 0 else 'OVER-ADMITTED'})")
    print(f"  budget overspend ${r['overspend']}  "
          f"({'OK' if r['overspend'] == 0 else 'OVERSPENT'})")


if __name__ == "__main__":
    main()
