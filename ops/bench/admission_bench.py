"""Budget admission latency and throughput under concurrency, beside a bare round-trip floor.

    python -m ops.bench.admission_bench [--producers 16] [--per-producer 400] [--procs]

A fresh PostgreSQL database (SLUICE_TEST_PG_URL or the local one); three budgets apply to
every request (org, team, feature) and the feature budget is driven past its limit, so the
run ends refusing. Producers only reserve (as the Gateway does); settler threads settle or
release what they reserved (as workers do). Prints p50/p99 of reserve() and of a bare
``SELECT 1`` through the same kind of pool, admissions/s, and the overspend, which must be 0.
With ``--procs`` each producer is its own process (no shared GIL).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import random
import threading
import time
from decimal import Decimal
from typing import Any

AMOUNT = Decimal("0.000735")  # a worst case; 16 x per-producer of them overrun the feature limit


def _admission(url: str) -> Any:
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import DatabaseSettings, Settings
    from scheduler.admission import build_admission

    return build_admission(Settings(database=DatabaseSettings(url=url)),
                           session_factory(make_engine(url, pool_size=4)))


def _request(i: int) -> tuple[Any, Any]:
    from models.domain.request import parse_request
    from models.domain.result import Route

    req = parse_request({"org": "bench-org", "team": "bench-team", "feature": "bench-feature",
                         "request_id": f"bench-{i}", "messages": [{"role": "user",
                                                                   "content": "x"}]})
    return req, Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                      lane="async")


def _produce(url: str, n: int, seed: int, rids: Any, out: Any, start: Any) -> None:
    """One producer: ``n`` reserve() calls; reservations go to ``rids`` (None ends), the
    latencies and counts to ``out``."""
    from models.domain.errors import BudgetExceeded

    adm = _admission(url)
    req, route = _request(seed)
    for _ in range(20):  # warm the pool and the budget list
        adm.release(adm.reserve(req, route, Decimal(0)) or "")
    lat: list[float] = []
    admitted = refused = 0
    start.wait()
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            rid = adm.reserve(req, route, AMOUNT)
        except BudgetExceeded:
            refused += 1
            rid = None
        lat.append((time.perf_counter() - t0) * 1000)
        if rid:
            admitted += 1
            rids.put(rid)
    rids.put(None)
    adm.close()
    out.put((lat, refused, admitted))


def _floor(url: str, producers: int, n: int) -> list[float]:
    """``SELECT 1`` round trips from ``producers`` threads on an autocommit pool."""
    from sqlalchemy import create_engine, text

    from models.db.engine import make_engine

    engine = create_engine(make_engine(url).url, isolation_level="AUTOCOMMIT",
                           pool_size=producers, pool_pre_ping=False)
    lat: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        mine = []
        with engine.connect() as conn:
            for _ in range(n):
                t0 = time.perf_counter()
                conn.execute(text("SELECT 1")).scalar()
                mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return lat


def _settle_all(url: str, inbox: Any, producers: int, settled: list[Decimal]) -> None:
    """Worker stand-ins: settle 90 % of reservations at 30-100 % of the worst case, release 10 %."""
    adm = _admission(url)
    rng = random.Random(7)
    done = 0
    while done < producers:
        rid = inbox.get()
        if rid is None:
            done += 1
            continue
        if rng.random() < 0.1:
            adm.release(rid)
        else:
            actual = (AMOUNT * Decimal(rng.randint(30, 100)) / 100)
            if adm.settle(rid, actual):
                settled.append(actual)
    adm.close()


def run(producers: int = 16, per_producer: int = 400, procs: bool = False) -> dict[str, Any]:
    """One measured run on a scratch database; returns the numbers printed by ``main``."""
    from ops.bench.harness import scratch_database, summary

    with scratch_database() as url:
        from models.db.budgets import get_budget, set_budget
        from models.db.engine import make_engine, session_factory

        sessions = session_factory(make_engine(url))
        limit = AMOUNT * producers * per_producer / 2  # demand is about twice the room
        with sessions() as s:
            set_budget(s, "org", "bench-org", "daily", hard=Decimal(1000))
            # The org's own team and feature budgets (budgets are matched within an org).
            set_budget(s, "team", "bench-team", "daily", hard=Decimal(1000), org="bench-org")
            set_budget(s, "feature", "bench-feature", "total", hard=limit, org="bench-org")
            s.commit()
        floor = _floor(url, producers, per_producer)
        ctx = mp.get_context("spawn")
        inbox: Any = ctx.Queue() if procs else queue.Queue()
        results: Any = ctx.Queue() if procs else queue.Queue()
        start: Any = ctx.Event() if procs else threading.Event()
        settled: list[Decimal] = []
        if procs:
            workers: list[Any] = [ctx.Process(target=_produce, args=(
                url, per_producer, i, inbox, results, start)) for i in range(producers)]
        else:
            workers = [threading.Thread(target=_produce, args=(
                url, per_producer, i, inbox, results, start)) for i in range(producers)]
        for w in workers:
            w.start()
        time.sleep(3.0 if procs else 1.0)  # every producer warmed up
        settler = threading.Thread(target=_settle_all, args=(url, inbox, producers, settled))
        t0 = time.perf_counter()
        start.set()
        settler.start()
        lat: list[float] = []
        refused = admitted = 0
        for _ in workers:  # read before join: a process exits only once its queue drained
            got, n_refused, n_admitted = results.get()
            lat += got
            refused += n_refused
            admitted += n_admitted
        wall = time.perf_counter() - t0
        for w in workers:
            w.join()
        settler.join()
        with sessions() as s:
            feat = get_budget(s, "feature", "bench-feature", "total", org="bench-org")
        assert feat is not None
        return {"admission": summary(lat), "floor": summary(floor), "wall_s": wall,
                "per_s": len(lat) / wall, "admitted": admitted, "refused": refused,
                "limit": limit, "spent": feat.spent, "reserved": feat.reserved,
                "settled_sum": sum(settled, Decimal(0)),
                "overspend": max(Decimal(0), feat.spent + feat.reserved - feat.hard_limit)}


def main() -> None:
    """Run and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--per-producer", type=int, default=400)
    parser.add_argument("--procs", action="store_true", help="one process per producer")
    args = parser.parse_args()
    r = run(args.producers, args.per_producer, args.procs)
    a, f = r["admission"], r["floor"]
    mode = "processes" if args.procs else "threads"
    print(f"admission, {args.producers} concurrent producers ({mode}), 3 budgets per request, "
          "PostgreSQL")
    print(f"  reserve()      p50 {a['p50']:.3f} ms   p99 {a['p99']:.3f} ms   "
          f"n={int(a['n'])}   {r['per_s']:,.0f} admissions/s")
    print(f"  floor SELECT 1 p50 {f['p50']:.3f} ms   p99 {f['p99']:.3f} ms   (same pool kind, "
          "same threads, same run)")
    print(f"  admitted {r['admitted']}, refused {r['refused']}; feature limit ${r['limit']}, "
          f"spent ${r['spent'].normalize()}, reserved ${r['reserved'].normalize()}")
    print(f"  settled by workers ${r['settled_sum'].normalize()} == budget spent: "
          f"{r['settled_sum'] == r['spent']}")
    print(f"  overspend ${r['overspend']}  ({'OK' if r['overspend'] == 0 else 'OVERSPENT'})")


if __name__ == "__main__":
    main()
