"""Front-door overhead p50 / p99 at 100 and 500 requests/s, beside a LiteLLM proxy, in one run.

    python -m ops.bench.frontdoor_bench [--rates 100,500] [--seconds 8] [--server-workers 2]
                                        [--celery-workers CORES] [--repeats 1] [--task-events]

Four targets share one zero-latency stand-in: the stand-in called directly, sluicegate's front
door (uvicorn --factory, with the whole pipeline behind it: response cache, routing, admission,
Redis, a Celery worker process, the PostgreSQL ledger), a LiteLLM proxy (PyPI, own venv,
no database) and the floor: a bare queue door (ops/bench/bare_door.py: HTTP in, a Celery no-op
through the same broker and worker, HTTP out). Load is open loop (requests leave on schedule),
unique per request, loopback only, bounded in count and time. Overhead = a target's latency
percentile minus the direct stand-in's at the same rate in the same run, measured the same way
for both proxies. The stack and the runs are shared with messages_bench (ops/bench/door_bench.py).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ops.bench.door_bench import (DIRECT, LITELLM, door_stack, frontdoor_process, load_note,
                                   measure, pooled)
from ops.bench.harness import free_port, pct
from ops.bench.litellm_proxy import DEFAULT_VENV, MASTER_KEY, litellm_process
from ops.bench.loadgen import RunResult, Target

MODEL = "gpt-4o-mini"
#: The floor target: HTTP in, a bare Celery no-op through the same broker and worker, HTTP out.
BARE = "bare queue door (floor)"
DOOR = "sluicegate front door"


def celery_floor(env: dict[str, str], n: int = 300, warmup: int = 30) -> list[float]:
    """Serial bare Celery no-op round trips (ms) through the same broker and worker: the floor
    under any queue-based front door, whatever it does around the hop."""
    from models.domain.settings import load_settings
    from queues.app import create_app

    app = create_app(load_settings(dict(env)), name="bench-floor")
    out: list[float] = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            assert app.send_task("sluice.ping", queue="interactive.api").get(timeout=10) == "pong"
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        app.close()
    return out


def _body(nonce: str) -> Any:
    def body(i: int) -> dict[str, object]:
        return {"model": MODEL, "max_tokens": 16, "messages": [
            {"role": "user", "content": f"Rephrase product title {i} {nonce}"}]}
    return body


def run(rates: list[float], seconds: float, warmup_s: float, server_workers: int,
        celery_workers: int, venv: Path, task_events: bool = False, repeats: int = 1
        ) -> tuple[list[RunResult], list[float]]:
    """Measure every target at every rate; returns the measured (not warm-up) runs and the
    bare Celery round trips (ms) measured in the same run."""
    with ExitStack() as stack:
        setup = door_stack(stack, server_workers=server_workers,
                           celery_workers=celery_workers, task_events=task_events)
        env, standin = setup.env, setup.standin
        bare, bare_proc = stack.enter_context(frontdoor_process(
            env, free_port(), server_workers, factory="ops.bench.bare_door:from_env"))
        litellm, litellm_proc = stack.enter_context(
            litellm_process(standin, free_port(), model=MODEL, workers=server_workers,
                            venv=venv))
        pids = {DIRECT: [], LITELLM: [litellm_proc.pid],
                BARE: [bare_proc.pid] + [w.pid for w in setup.workers], DOOR: setup.door_pids}
        floor = celery_floor(env)
        nonce = uuid.uuid4().hex[:8]
        targets = [
            Target(DIRECT, standin, "/v1/chat/completions",
                   {"Authorization": "Bearer sk-direct"}, _body(nonce + "d")),
            Target(LITELLM, litellm, "/v1/chat/completions",
                   {"Authorization": f"Bearer {MASTER_KEY}"}, _body(nonce + "l")),
            Target(BARE, bare, "/v1/chat/completions", {}, _body(nonce + "b")),
            Target(DOOR, setup.door, "/v1/chat/completions",
                   {"Authorization": f"Bearer {setup.key}", "x-sluice-feature": "bench"},
                   _body(nonce + "s")),
        ]
        out = measure(setup, targets, pids, rates, seconds, warmup_s, repeats,
                      drained={setup.door, bare})
    return out, floor


def overhead_ratio(runs: dict[str, RunResult], q: float) -> float | None:
    """sluicegate's overhead over LiteLLM's at percentile ``q`` (overhead: latency less the
    direct stand-in's); None when a target answered nothing, NaN when LiteLLM adds nothing."""
    found = [runs.get(n) for n in (DIRECT, DOOR, LITELLM)]
    if not all(r is not None and r.latencies_ms for r in found):
        return None
    direct, ours, theirs = (pct(r.latencies_ms, q) for r in found if r is not None)
    return (ours - direct) / (theirs - direct) if theirs > direct else float("nan")


def cpu_ratios(runs: dict[str, RunResult]) -> tuple[float, float, float, float] | None:
    """(sluicegate's CPU ms per answered request, LiteLLM's, and each one's answers per CPU
    second: the rate one core holds) at one offered rate; None when either answered nothing."""
    ours, theirs = runs.get(DOOR), runs.get(LITELLM)
    if not (ours and theirs and ours.ok and theirs.ok and ours.cpu_s and theirs.cpu_s):
        return None
    return (ours.cpu_s * 1000 / ours.ok, theirs.cpu_s * 1000 / theirs.ok,
            ours.ok / ours.cpu_s, theirs.ok / theirs.cpu_s)


def report(results: list[RunResult], console: Console, floor: list[float] | None = None
           ) -> None:
    """One table: latency, overhead over the direct stand-in, throughput; then the ratios."""
    table = Table(title="front-door overhead (ms) = latency - direct stand-in latency, same rate")
    for col in ("rate/s", "target", "answered", "held/s", "p50", "p99", "overhead p50",
                "overhead p99", "CPU ms/req"):
        table.add_column(col, justify="left" if col == "target" else "right")
    ratios: list[tuple[float, float, float]] = []
    floors: list[tuple[float, float, float]] = []
    for rate in sorted({r.rate for r in results}):
        runs = {r.target: r for r in results if r.rate == rate}
        direct = runs[DIRECT]
        d50, d99 = pct(direct.latencies_ms, 50), pct(direct.latencies_ms, 99)
        for name, r in runs.items():
            cpu = f"{r.cpu_s * 1000 / r.ok:.2f}" if r.ok and r is not direct else "-"
            if not r.latencies_ms:
                table.add_row(f"{rate:g}", name, f"0/{r.sent}", "0", "-", "-", "-", "-", cpu)
                continue
            p50, p99 = pct(r.latencies_ms, 50), pct(r.latencies_ms, 99)
            table.add_row(f"{rate:g}", name, f"{r.ok / max(r.sent, 1):.0%}", f"{r.throughput:.0f}",
                          f"{p50:.2f}", f"{p99:.2f}",
                          "-" if r is direct else f"{p50 - d50:.2f}",
                          "-" if r is direct else f"{p99 - d99:.2f}", cpu)
        if BARE in runs and DOOR in runs:
            floors.append((rate, runs[BARE].throughput,
                           runs[DOOR].throughput))
        r50, r99 = overhead_ratio(runs, 50), overhead_ratio(runs, 99)
        if r50 is not None and r99 is not None:
            ratios.append((rate, r50, r99))
    console.print(table)
    for rate, r50, r99 in ratios:
        console.print(f"[bold]ratio sluicegate / litellm overhead @ {rate:g}/s: "
                      f"p50 {r50:.2f}x, p99 {r99:.2f}x[/] (goal: p99 <= 0.5x)")
    for rate in sorted({r.rate for r in results}):
        cpu = cpu_ratios({r.target: r for r in results if r.rate == rate})
        if cpu is not None:
            ours, theirs, ours_core, theirs_core = cpu
            console.print(f"[bold]CPU per request @ {rate:g}/s: sluicegate {ours:.2f} ms, "
                          f"litellm {theirs:.2f} ms: {ours / theirs:.2f}x[/] (goal <= 0.5x); "
                          f"held per core {ours_core:.0f}/s vs {theirs_core:.0f}/s: "
                          f"{ours_core / theirs_core:.2f}x (goal >= 1.5x)")
    for rate, held, ours in floors:
        console.print(f"held @ {rate:g}/s offered: sluicegate {ours:.0f}/s, bare queue door "
                      f"{held:.0f}/s (HTTP + one Celery no-op hop, no shedding): "
                      f"{ours / held if held else float('nan'):.2f}x the floor's")
    if floor:
        f50, f99 = pct(floor, 50), pct(floor, 99)
        console.print(f"floor: bare Celery no-op round trip (serial, same broker and worker) "
                      f"p50 {f50:.2f} / p99 {f99:.2f} ms")
        for rate in sorted({r.rate for r in results}):
            runs = {r.target: r for r in results if r.rate == rate}
            lite, direct = runs.get(LITELLM), runs.get(DIRECT)
            if lite and direct and lite.latencies_ms and direct.latencies_ms:
                over = pct(lite.latencies_ms, 99) - pct(direct.latencies_ms, 99)
                if over > 0:
                    console.print(f"  floor p99 / litellm overhead p99 @ {rate:g}/s: "
                                  f"{f99 / over:.2f}x (a queue hop alone costs this much)")


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,500", help="comma-separated requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="uvicorn workers of the front door, and LiteLLM's --num_workers")
    parser.add_argument("--celery-workers", type=int, default=os.cpu_count() or 1,
                        help="Celery worker processes behind the front door (default: one per "
                             "core, as LiteLLM and the door get one process per core)")
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure every target this many times, interleaved; percentiles "
                             "pool the repeats, and each repeat's p99 ratio is printed too")
    parser.add_argument("--task-events", action="store_true",
                        help="workers send Celery task events, as when Flower watches them")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    try:
        import uvloop

        uvloop.install()  # the generator's own overhead lands on every target alike; keep it low
    except ImportError:
        pass
    results, floor = run(rates, args.seconds, args.warmup, args.server_workers,
                         args.celery_workers, args.litellm_venv, args.task_events,
                         max(1, args.repeats))
    console = Console(width=140)
    console.print(f"{os.cpu_count()} cores; {args.seconds:g} s per run after {args.warmup:g} s "
                  f"warm-up; {args.server_workers} server workers each; "
                  f"{args.celery_workers} Celery worker process(es); task events "
                  f"{'on' if args.task_events else 'off'}; {max(1, args.repeats)} repeat(s); "
                  f"{load_note()} at the end")
    report(pooled(results), console, floor)
    if args.repeats > 1:
        for rate in rates:
            each = [overhead_ratio({r.target: r for r in results
                                    if r.rate == rate and r.repeat == rep}, 99)
                    for rep in range(args.repeats)]
            console.print(f"p99 overhead ratio per repeat @ {rate:g}/s: "
                          + ", ".join("-" if x is None else f"{x:.2f}x" for x in each))


if __name__ == "__main__":
    main()
