"""One door beside LiteLLM's proxy on the same endpoint: overhead p50 / p99 and CPU per request.

Three targets share one zero-latency stand-in: the stand-in directly, sluicegate's front door
(the whole pipeline behind the door: response cache, routing, admission, Redis, Celery worker
processes, the PostgreSQL ledger) and a LiteLLM proxy (PyPI, own venv, no database) routing the
same model to the stand-in. Load is open loop and unique per request, as in frontdoor_bench.
Overhead = a target's latency percentile minus the direct stand-in's at the same rate. The
door benchmarks (``messages_bench``, ``responses_bench``) are a :class:`DoorBench` each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ops.bench.frontdoor_bench import (frontdoor_process, mint_key, pooled, report,
                                       tree_cpu_s, wait_for_drain)
from ops.bench.harness import bench_env, free_port, scratch_database, standin_process, \
    worker_process
from ops.bench.litellm_proxy import DEFAULT_VENV, MASTER_KEY, litellm_process
from ops.bench.loadgen import RunResult, Target, run_open_loop

DOOR = "sluicegate front door"
Body = Callable[[str], Callable[[int], dict[str, object]]]


@dataclass(frozen=True)
class DoorBench:
    """What differs between door benchmarks: the endpoint, the model and how to call it."""

    path: str
    model: str
    #: The stand-in API LiteLLM calls (``openai`` or ``anthropic``).
    provider: str
    #: ``nonce -> (i -> body)``: unique bodies per target and request.
    body: Body
    #: Builds a target's auth headers from its key.
    auth: Callable[[str], dict[str, str]]
    #: Sent to every target (``anthropic-version``).
    headers: dict[str, str] = field(default_factory=dict)


def run(bench: DoorBench, rates: list[float], seconds: float, warmup_s: float,
        server_workers: int, celery_workers: int, venv: Path,
        repeats: int = 1) -> list[RunResult]:
    """Measure every target at every rate, repeats interleaved; the measured runs."""
    out: list[RunResult] = []
    with ExitStack() as stack:
        db = stack.enter_context(scratch_database())
        standin = stack.enter_context(standin_process())
        env = bench_env(db, standin)
        env["SLUICE_BROKER__TASK_EVENTS"] = "false"
        key = mint_key(db)
        workers = [stack.enter_context(worker_process(env, queues="interactive.api",
                                                      concurrency=32))
                   for _ in range(celery_workers)]
        door, door_proc = stack.enter_context(frontdoor_process(env, free_port(),
                                                                server_workers))
        litellm, litellm_proc = stack.enter_context(
            litellm_process(standin, free_port(), model=bench.model, workers=server_workers,
                            venv=venv, provider=bench.provider))
        pids = {"stand-in direct": [], "litellm proxy": [litellm_proc.pid],
                DOOR: [door_proc.pid] + [w.pid for w in workers]}
        nonce = uuid.uuid4().hex[:8]
        targets = [
            Target("stand-in direct", standin, bench.path,
                   {**bench.auth("sk-direct"), **bench.headers}, bench.body(nonce + "d")),
            Target("litellm proxy", litellm, bench.path,
                   {**bench.auth(MASTER_KEY), **bench.headers}, bench.body(nonce + "l")),
            Target(DOOR, door, bench.path,
                   {**bench.auth(key), "x-sluice-feature": "bench", **bench.headers},
                   bench.body(nonce + "s")),
        ]
        offset = 0
        for rep, rate, target in ((rep, rate, target) for rep in range(repeats)
                                  for rate in rates for target in targets):
            asyncio.run(run_open_loop(target, rate, warmup_s, offset=offset))
            offset += 100_000
            before = tree_cpu_s(pids[target.name])
            door_before = tree_cpu_s([door_proc.pid])
            result = asyncio.run(run_open_loop(target, rate, seconds, offset=offset))
            result.cpu_s = tree_cpu_s(pids[target.name]) - before
            door_cpu = tree_cpu_s([door_proc.pid]) - door_before
            offset += 100_000
            result.repeat = rep
            out.append(result)
            split = ""
            if target.url == door and result.ok:
                split = (f" (CPU ms/req: front door {door_cpu * 1000 / result.ok:.2f}, "
                         f"worker {(result.cpu_s - door_cpu) * 1000 / result.ok:.2f})")
            print(f"  [{rep + 1}/{repeats}] {target.name} @ {rate:g}/s: "
                  f"{result.ok}/{result.sent} ok {result.errors or ''}{split}", flush=True)
            if target.url == door:
                wait_for_drain(env)
    return out


def main(bench: DoorBench, doc: str) -> None:
    """Parse arguments, run ``bench``, print the table and the CPU ratio."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rates", default="100", help="comma-separated requests/s")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="uvicorn workers of the front door, and LiteLLM's --num_workers")
    parser.add_argument("--celery-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = run(bench, rates, args.seconds, args.warmup, args.server_workers,
                  args.celery_workers, args.litellm_venv, max(1, args.repeats))
    console = Console(width=140)
    console.print(f"POST {bench.path} ({bench.model}); {os.cpu_count()} cores; "
                  f"{args.seconds:g} s per run after {args.warmup:g} s warm-up; "
                  f"{args.server_workers} server workers each; {args.celery_workers} Celery "
                  f"worker process(es); {max(1, args.repeats)} repeat(s)")
    merged = pooled(results)
    report(merged, console)
    for rate in rates:
        runs = {r.target: r for r in merged if r.rate == rate}
        ours, theirs = runs.get(DOOR), runs.get("litellm proxy")
        if ours and theirs and ours.ok and theirs.ok:
            a, b = ours.cpu_s * 1000 / ours.ok, theirs.cpu_s * 1000 / theirs.ok
            console.print(f"CPU per answered request @ {rate:g}/s: sluicegate {a:.2f} ms "
                          f"(door + workers), litellm {b:.2f} ms: {a / b:.2f}x")
