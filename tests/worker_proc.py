"""Start a real `celery worker` process for tests and wait until it says ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def celery_worker(env: dict[str, str], log: Path, *, queues: str, name: str,
                  concurrency: int = 8, loglevel: str = "INFO", ready_timeout: float = 120.0,
                  stop_timeout: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """A threads-pool worker of `queues.celery_app` with ``env`` added; logs to ``log``.

    The deadline is generous: on a busy 2-core machine imports alone can take a minute.
    """
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", "threads",
           "-c", str(concurrency), "-Q", queues, "-n", f"{name}@%h",
           # Heartbeats on, as in production: they keep the event dispatcher alive, which is
           # what lets Flower switch task events on (tests/integration/test_task_events.py).
           "--without-gossip", "--without-mingle", "--loglevel", loglevel]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + ready_timeout
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"celery worker {name} did not start:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def worker_gateway(env: dict[str, str], log: Path, *, name: str,
                   queues: str = "interactive.api,async.api") -> Iterator[Any]:
    """A worker process on ``env`` and a Gateway with the same settings, closed afterwards."""
    from models.domain.settings import load_settings
    from queues.producer import connect

    with celery_worker(env, log, queues=queues, name=name):
        gw = connect(load_settings(dict(env)))
        try:
            yield gw
        finally:
            gw.close()
