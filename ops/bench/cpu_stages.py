"""Where a process's CPU per request goes, by pipeline stage, from py-spy's folded stacks.

    python -m ops.bench.cpu_stages FOLDED_FILE CPU_MS_PER_REQUEST [--rules door|worker]

Each sample goes to the innermost frame that names a stage (so the ledger's psycopg calls
count as "final ledger transaction", not as "PostgreSQL driver"); a sample no rule names is
"other". The share of samples times the process's measured CPU per request gives milliseconds
per request. ``door_cpu --spy`` prints these tables for the front door and the worker.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

#: (stage, frame pattern), for the API worker process.
WORKER_RULES: Sequence[tuple[str, str]] = (
    ("Celery consumer: receive, decode, hand to a thread", r"^(asynloop|Consumer\.start) "),
    ("Celery task wrapper: trace, ack, result store", r"^(fast_trace_task|build_tracer)"),
    ("pipeline glue: parse the envelope, pick the provider, price the reply",
     r"^execute \(workers/service"),
    ("claim (PostgreSQL)", r"^WorkerRuntime\.claim "),
    ("attempt row + hold (PostgreSQL)", r"^(WorkerRuntime\.begin_attempt|begin_held) "),
    ("provider call: official SDK + HTTP", r"^\w+Provider\.(complete|stream) \(workers/providers"),
    ("final ledger transaction: finish + settle (PostgreSQL)", r"^finalize \(workers/attempts"),
    ("answer stash (Redis)", r"^(_Stash\.keep|keep \(workers/redelivery)"),
    ("response-cache store (Redis)", r"^ResponseCacheBase\.store "),
)

#: (stage, frame pattern), for the front-door (uvicorn) process.
DOOR_RULES: Sequence[tuple[str, str]] = (
    ("HTTP server + ASGI (uvicorn, Starlette)",
     r"^(Server\.run|RequestResponseCycle\.run_asgi|HttpToolsProtocol\.) "),
    ("door endpoint: auth, wire format in and out", r"^(door_endpoint|guarded)\.<locals>"),
    ("request body: read and parse JSON", r"^read_json "),
    ("answer rendering", r"^_answer \(queues/http"),
    ("producer glue: request model, envelope", r"^Gateway\.submit "),
    ("token count of the prompt", r"^count_(request|text|messages)"),
    ("response-cache lookup (Redis)", r"^ResponseCacheBase\.lookup "),
    ("single flight (Redis)", r"^RedisSingleFlight\."),
    ("routing", r"^decide_route "),
    ("rate limits (Redis)", r"^(RateStep|RedisRateLimiter|LimitBook)\."),
    ("budget admission (reserve)", r"^\w*Admission\.reserve"),
    ("publish (Celery send_task to Redis)", r"^Celery\.send_task "),
    ("in-flight record (Redis)", r"^Inflight\.add "),
    ("result wait: drain replies (Redis pub/sub)", r"^ResultWaiter\."),
)


def stage_shares(folded: Path, rules: Sequence[tuple[str, str]]) -> tuple[Counter[str], int]:
    """Samples per stage (innermost match wins) and the total, from a py-spy raw file."""
    compiled = [(name, re.compile(pattern)) for name, pattern in rules]
    counts: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        stage = "other: threads, GC, logging, libraries outside a stage"
        for frame in reversed(stack.split(";")):
            hit = next((name for name, rx in compiled if rx.search(frame)), None)
            if hit is not None:
                stage = hit
                break
        counts[stage] += int(n)
    return counts, total


def table(folded: Path, cpu_ms: float, rules: Sequence[tuple[str, str]]) -> list[str]:
    """Lines of a per-stage table: ms per request and share, dearest first."""
    counts, total = stage_shares(folded, rules)
    if not total:
        return [f"  no samples in {folded}"]
    lines = [f"  {'stage':<70} {'ms/req':>7} {'share':>6}"]
    for stage, n in counts.most_common():
        lines.append(f"  {stage:<70} {cpu_ms * n / total:7.2f} {100 * n / total:5.1f}%")
    lines.append(f"  {'total (' + str(total) + ' samples)':<70} {cpu_ms:7.2f} 100.0%")
    return lines


def main() -> None:
    """Print the table for one folded file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folded", type=Path)
    parser.add_argument("cpu_ms", type=float, help="the process's CPU ms per request")
    parser.add_argument("--rules", choices=("door", "worker"), default="worker")
    args = parser.parse_args()
    rules = DOOR_RULES if args.rules == "door" else WORKER_RULES
    print("\n".join(table(args.folded, args.cpu_ms, rules)))


if __name__ == "__main__":
    main()
