"""Helpers of the chaos suite: worker processes to kill, throwaway servers, ledger counts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from models.db.tables import LedgerRow

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


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


def start_worker(env: dict[str, str], log: Path, *, queues: str = "interactive.api,async.api",
                 concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A real Celery worker process (ours, so a test may ``kill -9`` it); ready on return."""
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", "threads",
           "-c", str(concurrency), "-Q", queues, "-n", f"chaos-{uuid.uuid4().hex[:6]}@%h",
           "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while b"ready." not in log.read_bytes()[start:]:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
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


def ledger_counts(sessions: Any, prefix: str) -> dict[str, int]:
    """Ledger rows per outcome among request ids starting with ``prefix``."""
    with sessions() as s:
        rows = s.execute(select(LedgerRow.outcome, func.count())
                         .where(LedgerRow.request_id.startswith(prefix))
                         .group_by(LedgerRow.outcome)).all()
    return {str(o): int(n) for o, n in rows}


@contextmanager
def redis_server(port: int | None = None) -> Iterator[int]:
    """A throwaway redis-server on loopback (never the shared one); yields its port."""
    port = port or free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own (run as the postgres user), to stop and start at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, cwd="/",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.folder / "data"), "-A", "trust",
                  "-U", "postgres")

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off "
                f"-c unix_socket_directories={self.folder}")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-o", opts,
                  "-l", str(self.folder / "pg.log"), "-w", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                  "-w", "stop")
