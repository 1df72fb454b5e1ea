"""Helpers of the chaos suite: worker processes to kill, throwaway servers, ledger counts."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from models.db.tables import LedgerRow
from ops.bench import procs
from ops.bench.harness import free_port, wait_port
from ops.bench.procs import kill9, stop

__all__ = ["free_port", "kill9", "ledger_counts", "replacement_worker", "start_worker",
           "stop", "wait_port"]

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def start_worker(env: dict[str, str], log: Path, *, queues: str = "interactive.api,async.api",
                 concurrency: int = 8) -> subprocess.Popen[bytes]:
    """A real Celery worker process (ours, so a test may ``kill -9`` it); ready on return."""
    return procs.start_worker(env, log, queues=queues, concurrency=concurrency, name="chaos")


@contextmanager
def replacement_worker(env: dict[str, str], log: Path, gateway: Any, sessions: Any, *,
                       older_than_s: float, queues: str = "interactive.api,async.api",
                       concurrency: int = 8) -> Iterator[subprocess.Popen[bytes]]:
    """A worker started after a kill, with what ``celery beat`` does in production beside it:
    the in-flight sweep every 2 s, re-sending messages the kill lost. Both stop on exit."""
    from queues.inflight import sweep_once

    second = start_worker(env, log, queues=queues, concurrency=concurrency)
    halt = threading.Event()

    def loop() -> None:
        while not halt.wait(2.0):
            try:  # as beat would: a failed sweep is tried again at the next tick
                sweep_once(gateway.inflight, gateway.app, sessions, older_than_s=older_than_s)
            except Exception as exc:  # noqa: BLE001
                print(f"sweep failed: {exc!r}")

    threading.Thread(target=loop, daemon=True, name="chaos-sweeper").start()
    try:
        yield second
    finally:
        halt.set()
        stop(second)


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
