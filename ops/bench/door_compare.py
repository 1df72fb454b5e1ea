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
import os
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ops.bench.door_bench import (DIRECT, LITELLM, cpu_ratio_lines, door_stack, load_note,
                                  measure, pooled)
from ops.bench.frontdoor_bench import DOOR, report
from ops.bench.harness import free_port
from ops.bench.litellm_proxy import DEFAULT_VENV, MASTER_KEY, litellm_process
from ops.bench.loadgen import RunResult, Target

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
    with ExitStack() as stack:
        setup = door_stack(stack, server_workers=server_workers,
                           celery_workers=celery_workers)
        litellm, litellm_proc = stack.enter_context(
            litellm_process(setup.standin, free_port(), model=bench.model,
                            workers=server_workers, venv=venv, provider=bench.provider))
        pids = {DIRECT: [], LITELLM: [litellm_proc.pid], DOOR: setup.door_pids}
        nonce = uuid.uuid4().hex[:8]
        targets = [
            Target(DIRECT, setup.standin, bench.path,
                   {**bench.auth("sk-direct"), **bench.headers}, bench.body(nonce + "d")),
            Target(LITELLM, litellm, bench.path,
                   {**bench.auth(MASTER_KEY), **bench.headers}, bench.body(nonce + "l")),
            Target(DOOR, setup.door, bench.path,
                   {**bench.auth(setup.key), "x-sluice-feature": "bench", **bench.headers},
                   bench.body(nonce + "s")),
        ]
        return measure(setup, targets, pids, rates, seconds, warmup_s, repeats,
                       drained={setup.door})


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
    before = load_note()
    results = run(bench, rates, args.seconds, args.warmup, args.server_workers,
                  args.celery_workers, args.litellm_venv, max(1, args.repeats))
    console = Console(width=140)
    console.print(f"POST {bench.path} ({bench.model}); {os.cpu_count()} cores; "
                  f"{args.seconds:g} s per run after {args.warmup:g} s warm-up; "
                  f"{args.server_workers} server workers each; {args.celery_workers} Celery "
                  f"worker process(es); {max(1, args.repeats)} repeat(s); {before} before, "
                  f"{load_note()} after")
    merged = pooled(results)
    report(merged, console)
    for line in cpu_ratio_lines(merged, rates, DOOR):
        console.print(line)
