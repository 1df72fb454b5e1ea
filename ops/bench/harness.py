"""Start the real parts a benchmark needs: a fresh ledger database, a stand-in, a Celery worker."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pct(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of millisecond samples."""
    return {"p50": pct(samples_ms, 50), "p99": pct(samples_ms, 99),
            "mean": statistics.fmean(samples_ms), "n": float(len(samples_ms))}


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Block until something listens on ``port``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def wait_healthy(proc: subprocess.Popen[bytes], url: str, *, timeout: float,
                 interval: float, failure: Callable[[], str]) -> None:
    """Poll ``url`` until it answers 200; raise with ``failure()`` if ``proc`` dies or time runs
    out."""
    import httpx

    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(failure())
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)


@contextmanager
def scratch_database(admin_url: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database migrated to head, dropped afterwards."""
    import psycopg

    from ops.db import upgrade

    admin = admin_url or os.environ.get("SLUICE_TEST_PG_URL",
                                        "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def standin_process(latency_ms: float = 0.0, batch_delay_s: float = 0.0) -> Iterator[str]:
    """The stand-in in its own process (not sharing the benchmark's GIL); yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workers.providers.standin", "--host",
                             "127.0.0.1", "--port", str(port), "--latency-ms", str(latency_ms),
                             "--batch-delay-s", str(batch_delay_s)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_env(db_url: str, standin_url: str, redis_url: str | None = None) -> dict[str, str]:
    """SLUICE_* variables pointing every part at the benchmark's own services."""
    redis = (redis_url or os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379"))
    redis = redis.rstrip("/") + "/14"
    prefix = f"sgbench{uuid.uuid4().hex[:6]}:"
    return {"SLUICE_BROKER__URL": redis, "SLUICE_BROKER__RESULT_BACKEND": redis,
            "SLUICE_BROKER__KEY_PREFIX": prefix, "SLUICE_DATABASE__URL": db_url,
            "SLUICE_CACHE__REDIS_URL": redis, "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
            "SLUICE_PROVIDERS__OPENAI_BASE_URL": f"{standin_url}/v1",
            "SLUICE_PROVIDERS__ANTHROPIC_BASE_URL": standin_url}


@contextmanager
def worker_process(env: dict[str, str], queues: str = "interactive.api,async.api",
                   concurrency: int = 8, pool: str = "threads"
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` process for ``queues``, ready when this yields."""
    log = Path(tempfile.mkstemp(prefix="sluice-bench-worker-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", pool,
           "-c", str(concurrency), "-Q", queues, "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
           "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("worker failed to start:\n" + log.read_text()[-2000:])
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.unlink(missing_ok=True)
