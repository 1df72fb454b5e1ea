"""Worker processes a soak run can start, ``kill -9`` and restart (no pytest, no tests import)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(env: dict[str, str], log: Path, *, queues: str = "interactive.api,async.api",
                 concurrency: int = 8, ready_s: float = 90.0, name: str = "soak"
                 ) -> subprocess.Popen[bytes]:
    """A real Celery worker process, ready on return; its output is appended to ``log``."""
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", "threads",
           "-c", str(concurrency), "-Q", queues, "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
           "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + ready_s
    while b"ready." not in log.read_bytes()[start:]:
        if proc.poll() is not None or time.time() > deadline:
            kill9(proc)
            raise RuntimeError("worker failed to start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    return proc


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the process, as a crashed host would."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker gently, then for good."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill9(proc)
