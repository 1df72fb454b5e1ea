"""``/v1/messages`` overhead p50 / p99 and CPU per request, beside LiteLLM's own ``/v1/messages``.

    python -m ops.bench.messages_bench [--rates 100] [--seconds 8] [--server-workers 2]
                                       [--celery-workers CORES] [--repeats 1]

Three targets share one zero-latency stand-in, called with Anthropic's Messages API: the
stand-in directly, sluicegate's front door (its Messages door, with the whole pipeline behind
it: response cache, routing, admission, Redis, Celery worker processes, the PostgreSQL ledger)
and a LiteLLM proxy (PyPI, own venv, no database) routing the same Claude model to the
stand-in's Anthropic API. The stack and the runs are frontdoor_bench's (ops/bench/door_bench.py).
Overhead = a target's latency percentile minus the direct stand-in's at the same rate.
"""

from __future__ import annotations

import argparse
import os
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.bench.door_bench import (DIRECT, LITELLM, cpu_ratio_lines, door_stack, load_note,
                                  measure, pooled)
from ops.bench.frontdoor_bench import DOOR, report
from ops.bench.harness import free_port
from ops.bench.litellm_proxy import DEFAULT_VENV, MASTER_KEY, litellm_process
from ops.bench.loadgen import RunResult, Target

MODEL = "claude-haiku-4-5"
VERSION = {"anthropic-version": "2023-06-01"}


def _body(nonce: str) -> Any:
    def body(i: int) -> dict[str, object]:
        return {"model": MODEL, "max_tokens": 16, "messages": [
            {"role": "user", "content": f"Rephrase product title {i} {nonce}"}]}
    return body


def run(rates: list[float], seconds: float, warmup_s: float, server_workers: int,
        celery_workers: int, venv: Path, repeats: int = 1) -> list[RunResult]:
    """Measure every target at every rate, repeats interleaved; the measured runs."""
    with ExitStack() as stack:
        setup = door_stack(stack, server_workers=server_workers,
                           celery_workers=celery_workers)
        litellm, litellm_proc = stack.enter_context(
            litellm_process(setup.standin, free_port(), model=MODEL, workers=server_workers,
                            venv=venv, provider="anthropic"))
        pids = {DIRECT: [], LITELLM: [litellm_proc.pid], DOOR: setup.door_pids}
        nonce = uuid.uuid4().hex[:8]
        targets = [
            Target(DIRECT, setup.standin, "/v1/messages",
                   {"x-api-key": "sk-direct", **VERSION}, _body(nonce + "d")),
            Target(LITELLM, litellm, "/v1/messages",
                   {"x-api-key": MASTER_KEY, **VERSION}, _body(nonce + "l")),
            Target(DOOR, setup.door, "/v1/messages",
                   {"x-api-key": setup.key, "x-sluice-feature": "bench", **VERSION},
                   _body(nonce + "s")),
        ]
        return measure(setup, targets, pids, rates, seconds, warmup_s, repeats,
                       drained={setup.door})


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    results = run(rates, args.seconds, args.warmup, args.server_workers, args.celery_workers,
                  args.litellm_venv, max(1, args.repeats))
    console = Console(width=140)
    console.print(f"POST /v1/messages ({MODEL}); {os.cpu_count()} cores; {args.seconds:g} s "
                  f"per run after {args.warmup:g} s warm-up; {args.server_workers} server "
                  f"workers each; {args.celery_workers} Celery worker process(es); "
                  f"{max(1, args.repeats)} repeat(s); {before} before, {load_note()} after")
    merged = pooled(results)
    report(merged, console)
    for line in cpu_ratio_lines(merged, rates, DOOR):
        console.print(line)


if __name__ == "__main__":
    main()
