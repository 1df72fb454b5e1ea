"""What every door benchmark shares: the stack behind a door, the interleaved runs, CPU counts.

``frontdoor_bench`` (chat completions) and ``messages_bench`` (Anthropic Messages) differ in
their targets and their report; both start the same stack (scratch ledger, zero-latency
stand-in, Celery worker processes, the front door under uvicorn, a LiteLLM proxy) and measure
the same way (:func:`measure`): each target at each rate after a warm-up, repeats interleaved,
CPU counted over each system's process tree, the queue drained after a run that left a backlog.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ops.bench.harness import (ROOT, bench_env, free_port, scratch_database, standin_process,
                               wait_healthy, worker_process)
from ops.bench.loadgen import RunResult, Target, run_open_loop
from ops.bench.procs import stop

DIRECT = "stand-in direct"
LITELLM = "litellm proxy"


@contextmanager
def frontdoor_process(env: dict[str, str], port: int, workers: int,
                      factory: str = "queues.http.app:from_env"
                      ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``uvicorn --factory <factory>`` in its own process(es); yields URL, proc."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", factory,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url + "/healthz", timeout=60, interval=0.2,
                     failure=lambda: "front door did not start: "
                     + (proc.stderr.read().decode()[-2000:] if proc.stderr else ""))
        yield url, proc
    finally:
        stop(proc)


def mint_key(db_url: str) -> str:
    """A team key in the benchmark's scratch ledger."""
    from models.db.api_keys import create_key
    from models.db.engine import make_engine, session_factory

    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        token, _ = create_key(s, team="bench", name="frontdoor-bench")
        s.commit()
    engine.dispose()
    return token


def wait_for_drain(env: dict[str, str], queue: str = "interactive.api",
                   limit_s: float = 60.0) -> None:
    """Let a backlog left by an overloaded run finish before the next run starts."""
    import redis

    client = redis.Redis.from_url(env["SLUICE_BROKER__URL"])
    key = env["SLUICE_BROKER__KEY_PREFIX"] + queue
    deadline = time.time() + limit_s
    while client.llen(key) and time.time() < deadline:
        time.sleep(0.25)
    client.close()
    time.sleep(1.0)  # the last tasks taken off the queue are still running


def tree_cpu_s(roots: list[int]) -> float:
    """User + system CPU seconds of ``roots`` and all their descendants (Linux /proc)."""
    parent: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    todo, seen = list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += [child for child, ppid in parent.items() if ppid == pid]
    return sum(times.get(pid, 0.0) for pid in seen)


def pooled(results: list[RunResult]) -> list[RunResult]:
    """One result per (rate, target): the repeats' samples, counts, time and CPU summed."""
    merged: dict[tuple[float, str], RunResult] = {}
    for r in results:
        into = merged.setdefault((r.rate, r.target), RunResult(target=r.target, rate=r.rate,
                                                               sent=0))
        into.sent += r.sent
        into.latencies_ms += r.latencies_ms
        into.elapsed_s += r.elapsed_s
        into.cpu_s += r.cpu_s
        for k, v in r.errors.items():
            into.errors[k] = into.errors.get(k, 0) + v
    return list(merged.values())


@dataclass
class DoorStack:
    """The processes behind one benchmark run, all stopped when its ExitStack closes."""

    env: dict[str, str]
    standin: str
    key: str
    door: str
    door_proc: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def door_pids(self) -> list[int]:
        """The front door's process and the Celery workers behind it."""
        return [self.door_proc.pid] + [w.pid for w in self.workers]


def door_stack(stack: ExitStack, *, server_workers: int, celery_workers: int,
               task_events: bool = False) -> DoorStack:
    """Scratch ledger, zero-latency stand-in, Celery workers and the front door, entered on
    ``stack``."""
    db = stack.enter_context(scratch_database())
    standin = stack.enter_context(standin_process())
    env = bench_env(db, standin)
    # Off by default, as in production unless Flower watches (it switches them on).
    env["SLUICE_BROKER__TASK_EVENTS"] = "true" if task_events else "false"
    key = mint_key(db)
    workers = [stack.enter_context(worker_process(env, queues="interactive.api",
                                                  concurrency=32))
               for _ in range(celery_workers)]
    door, door_proc = stack.enter_context(frontdoor_process(env, free_port(), server_workers))
    return DoorStack(env=env, standin=standin, key=key, door=door, door_proc=door_proc,
                     workers=workers)


def measure(setup: DoorStack, targets: list[Target], pids: dict[str, list[int]],
            rates: list[float], seconds: float, warmup_s: float, repeats: int,
            drained: set[str]) -> list[RunResult]:
    """Every target at every rate after a warm-up; repeats interleave the targets (A B C, A B
    C, ...) so a machine that drifts slower or faster weighs on every target alike. CPU is
    counted over each target's process tree (``pids``; Redis and PostgreSQL, shared by
    sluicegate's parts, are not counted): robust to other load on the machine. After a run
    of a target in ``drained`` (its URL), its queue is let drain."""
    out: list[RunResult] = []
    offset = 0
    warm(targets)
    for rep, rate, target in ((rep, rate, target) for rep in range(repeats)
                              for rate in rates for target in targets):
        asyncio.run(run_open_loop(target, rate, warmup_s, offset=offset))
        offset += 100_000
        cpu_before = tree_cpu_s(pids[target.name])
        door_before = tree_cpu_s([setup.door_proc.pid])
        result = asyncio.run(run_open_loop(target, rate, seconds, offset=offset))
        result.cpu_s = tree_cpu_s(pids[target.name]) - cpu_before
        door_cpu = tree_cpu_s([setup.door_proc.pid]) - door_before
        offset += 100_000
        result.repeat = rep
        out.append(result)
        split = ""
        if target.url == setup.door and result.ok:
            split = (f" (CPU ms/req: front door {door_cpu * 1000 / result.ok:.2f}, "
                     f"worker {(result.cpu_s - door_cpu) * 1000 / result.ok:.2f})")
        print(f"  [{rep + 1}/{repeats}] {target.name} @ {rate:g}/s: "
              f"{result.ok}/{result.sent} ok {result.errors or ''}{split}", flush=True)
        if target.url in drained:
            wait_for_drain(setup.env)
    return out


def warm(targets: list[Target], each: int = 3, timeout_s: float = 120.0) -> None:
    """A few serial requests per target before anything is measured: the first one through a
    cold stack (imports, connection pools, the worker's first task) takes seconds, and an open
    loop started on it would time out behind it and measure the cold start, not the path."""
    import httpx

    for target in targets:
        for i in range(each):
            try:
                status = httpx.post(target.url + target.path, json=target.body(-1 - i),
                                    headers=target.headers, timeout=timeout_s).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__  # type: ignore[assignment]
            if status != 200:  # best effort: the measured runs count what fails
                print(f"  warm-up {target.name}: {status}", flush=True)


def cpu_ratio_lines(results: list[RunResult], rates: list[float], ours: str) -> list[str]:
    """CPU per answered request of ``ours`` against LiteLLM's, at each rate."""
    lines = []
    for rate in rates:
        runs = {r.target: r for r in results if r.rate == rate}
        mine, theirs = runs.get(ours), runs.get(LITELLM)
        if mine and theirs and mine.ok and theirs.ok:
            a, b = mine.cpu_s * 1000 / mine.ok, theirs.cpu_s * 1000 / theirs.ok
            lines.append(f"CPU per answered request @ {rate:g}/s: sluicegate {a:.2f} ms "
                         f"(door + workers), litellm {b:.2f} ms: {a / b:.2f}x")
    return lines


def load_note() -> str:
    """The machine's load averages, for a figure taken on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"
