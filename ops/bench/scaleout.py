"""``python -m ops.bench.scaleout``: the pipeline on two worker hosts' worth of processes vs one.

A "host" is what ``docker compose up --scale`` adds: one worker process per API lane
(interactive.api, async.api), each ``-c THREADS``. Every run shares one broker (a private
redis-server, so its CPU is this run's alone) and one PostgreSQL ledger (a fresh database),
and the stand-in answers after ``--latency-ms``, so a worker's threads, not the machine's CPU,
bound one host. Callers are closed loops, half per lane, enough to keep every thread busy.
The shared parts' CPU per request (Redis's own counter; the ledger database's backend
processes) says at what rate each of them would fill one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator
from typing import Any

from ops.bench.harness import (bench_env, free_port, pct, scratch_database, standin_process,
                               wait_port, worker_process)


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free port (nothing kept on disk); yields its URL."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def redis_cpu_s(url: str) -> float:
    """CPU seconds the Redis server has used so far (its own INFO counter)."""
    import redis

    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def ledger_cpu_s(db_name: str) -> float:
    """CPU seconds of the PostgreSQL backends serving ``db_name`` (process title match)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if db_name in " ".join(proc.info["cmdline"] or ()):
                t = proc.cpu_times()
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def workers_cpu_s() -> float:
    """CPU seconds of this process's children (the worker processes and the stand-in)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def drive(gateway: Any, callers: int, seconds: float) -> tuple[int, list[float]]:
    """``callers`` closed loops (half interactive, half async) for ``seconds``: (done, ms)."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()

    def loop(k: int) -> None:
        lane = "interactive" if k % 2 == 0 else "async"
        i = 0
        while time.monotonic() < stop:
            i += 1
            t0 = time.perf_counter()
            # a fresh prompt, the cache bypassed: every request goes through a worker
            gateway.complete({"team": "bench", "feature": "scaleout", "model": "cheap",
                              "lane": lane, "max_tokens": 16, "request_id": uuid.uuid4().hex,
                              "cache": {"mode": "bypass"}, "messages": [
                                  {"role": "user", "content": f"title {uuid.uuid4().hex}"}]},
                             timeout=60)
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                done[0] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0], latencies


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    """One measurement per host count, each with its own worker processes."""
    from models.domain.settings import load_settings
    from queues.producer import connect

    rows = []
    with ExitStack() as stack:
        db = stack.enter_context(scratch_database())
        standin = stack.enter_context(standin_process(latency_ms=args.latency_ms))
        redis = stack.enter_context(private_redis())
        env = bench_env(db, standin, redis)
        gateway = connect(load_settings({**os.environ, **env}))
        stack.callback(gateway.close)
        db_name = db.rsplit("/", 1)[1]
        for hosts in args.hosts:
            with ExitStack() as workers:
                for _ in range(hosts):
                    for queue in ("interactive.api", "async.api"):
                        workers.enter_context(worker_process(env, queues=queue,
                                                             concurrency=args.threads))
                callers = 2 * max(args.hosts) * args.threads * 2
                drive(gateway, callers, 2.0)  # warm-up: connections, first-task costs
                r0, p0, t0 = redis_cpu_s(redis), ledger_cpu_s(db_name), time.perf_counter()
                c0, w0 = time.process_time(), workers_cpu_s()
                done, latencies = drive(gateway, callers, args.seconds)
                wall = time.perf_counter() - t0
                caller_ms = (time.process_time() - c0) * 1000 / max(done, 1)
                worker_ms = (workers_cpu_s() - w0) * 1000 / max(done, 1)
                rows.append({"hosts": hosts, "workers": 2 * hosts, "rps": done / wall,
                             "p50": pct(latencies, 50), "p99": pct(latencies, 99),
                             "redis_ms": (redis_cpu_s(redis) - r0) * 1000 / max(done, 1),
                             "pg_ms": (ledger_cpu_s(db_name) - p0) * 1000 / max(done, 1),
                             "caller_ms": caller_ms, "worker_ms": worker_ms,
                             "load": os.getloadavg()[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print throughput per host count against one host, and the shared parts' cost."""
    parser = argparse.ArgumentParser(prog="python -m ops.bench.scaleout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2", help="host counts to measure, in order")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--latency-ms", type=float, default=250.0, help="stand-in latency")
    parser.add_argument("--seconds", type=float, default=15.0, help="per host count")
    args = parser.parse_args(argv)
    args.hosts = [int(h) for h in str(args.hosts).split(",")]
    rows = run(args)
    one = rows[0]["rps"] / rows[0]["hosts"]
    print(f"scaleout: stand-in latency {args.latency_ms:g} ms, {args.threads} threads per worker, "
          f"one worker per API lane per host, {args.seconds:g} s per run (noisy: compare ratios)")
    print(f"{'hosts':>5} {'workers':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'vs one':>7} "
          f"{'redis ms/req':>12} {'pg ms/req':>9} {'callers ms/req':>14} {'workers ms/req':>14} "
          f"{'load':>5}")
    for r in rows:
        print(f"{r['hosts']:5d} {r['workers']:7d} {r['rps']:7.1f} {r['p50']:7.1f} {r['p99']:7.1f} "
              f"{r['rps'] / one:6.2f}x {r['redis_ms']:12.3f} {r['pg_ms']:9.3f} "
              f"{r['caller_ms']:14.2f} {r['worker_ms']:14.2f} {r['load']:5.1f}")
    last = rows[-1]
    ceiling = args.threads * 2 * 1000 / args.latency_ms
    print(f"note: one host's threads allow at most {ceiling:.0f} req/s at this latency; "
          f"{last['hosts']} hosts reach {last['rps'] / (ceiling * last['hosts']):.0%} of theirs")
    cores = (last["caller_ms"] + last["worker_ms"] + last["redis_ms"] + last["pg_ms"]) \
        * last["rps"] / 1000
    print(f"note: at {last['rps']:.1f} req/s the whole run used {cores:.2f} cores of "
          f"{os.cpu_count()} (load average {last['load']:.1f}: other work shares them)")
    for name, key in (("Redis (broker and result store)", "redis_ms"),
                      ("the ledger's PostgreSQL backends", "pg_ms")):
        if last[key] > 0:
            print(f"note: {name}: {last[key]:.3f} ms CPU per request, one core full at "
                  f"~{1000 / last[key]:.0f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
