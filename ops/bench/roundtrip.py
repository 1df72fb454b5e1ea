"""Interactive round trip through the whole pipeline vs a bare Celery no-op, in the same run.

    python -m ops.bench.roundtrip [--n 300]

Uses the running Redis and PostgreSQL (SLUICE_TEST_REDIS_URL / SLUICE_TEST_PG_URL), a fresh
ledger database, the zero-latency stand-in in its own process and one real worker process.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

import psycopg

from ops.bench.harness import bench_env, scratch_database, standin_process, summary, worker_process


def run(n: int = 300, warmup: int = 30) -> dict[str, dict[str, float]]:
    """Measure both round trips ``n`` times each; returns their summaries in ms."""
    from models.domain.settings import load_settings
    from queues.producer import connect

    with scratch_database() as db, standin_process() as standin:
        env = bench_env(db, standin)
        settings = load_settings(env)
        with worker_process(env):
            gateway = connect(settings)
            app = gateway.app
            floor: list[float] = []
            full: list[float] = []
            lag: list[float] = []
            body: dict[str, Any] = {"team": "bench", "feature": "roundtrip", "model": "cheap",
                                    "max_tokens": 16, "lane": "interactive"}
            ledger = psycopg.connect(db, autocommit=True)
            for i in range(warmup + n):
                t0 = time.perf_counter()
                assert app.send_task("sluice.ping", queue="interactive.api").get(timeout=10) \
                    == "pong"
                t1 = time.perf_counter()
                rid = uuid.uuid4().hex
                gateway.complete({**body, "request_id": rid, "messages": [
                    {"role": "user", "content": f"Rephrase product title number {i}"}]},
                    timeout=10)
                t2 = time.perf_counter()
                # The worker bills the answer after its reply: the next floor sample waits
                # until it has, so no sample shares the worker with the last one's writes.
                waited = _final(ledger, rid, t2)
                if i >= warmup:
                    lag.append(waited)
                    floor.append((t1 - t0) * 1000)
                    full.append((t2 - t1) * 1000)
            ledger.close()
            gateway.close()
    return {"celery no-op round trip": summary(floor), "sluicegate complete()": summary(full),
            "reply to final ledger row": summary(lag)}


def _final(ledger: Any, request_id: str, since: float, timeout: float = 5.0) -> float:
    """Wait until the request's ledger row is final; ms from ``since`` (the reply) to then."""
    while True:
        row = ledger.execute("SELECT outcome FROM ledger WHERE request_id = %s",
                             (request_id,)).fetchone()
        now = time.perf_counter()
        if row is not None and row[0] != "running":
            return max(now - since, 0.0) * 1000
        if now - since > timeout:
            raise RuntimeError(f"the ledger row of {request_id} is not final after {timeout} s")
        time.sleep(0.0005)


def main() -> None:
    """Print p50/p99 of both round trips and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    res = run(args.n)
    floor, full = res["celery no-op round trip"], res["sluicegate complete()"]
    table = Table(title=f"interactive round trip, n={args.n} (ms)")
    for col in ("path", "p50", "p99", "mean"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, s in list(res.items())[:2]:
        table.add_row(name, f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['mean']:.2f}")
    lag = res["reply to final ledger row"]
    table.add_row("reply to final ledger row", f"{lag['p50']:.2f}", f"{lag['p99']:.2f}",
                  f"{lag['mean']:.2f}", style="dim")
    table.add_row("ratio (pipeline / floor)", f"{full['p50'] / floor['p50']:.2f}x",
                  f"{full['p99'] / floor['p99']:.2f}x", f"{full['mean'] / floor['mean']:.2f}x",
                  style="bold")
    Console().print(table)


if __name__ == "__main__":
    main()
