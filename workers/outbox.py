"""A worker's local outbox: final ledger writes that could not reach the database, replayed later.

The provider was already paid when a final row is written, so losing that write would lose
money from the ledger. When the database is unreachable the row (and the reservation to settle
or release) is kept in a small SQLite file in the worker's home and replayed, exactly once, when
the database answers again: ``ledger.finish`` only updates a row still ``running`` and settle /
release are idempotent, so a replay that races another one writes nothing twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db import ledger
from models.domain.errors import LedgerError
from workers.runtime import WorkerRuntime

log = logging.getLogger("sluice.outbox")
_MONEY = ("cost", "baseline_cost", "list_cost", "estimated_cost")
#: Seconds between replay attempts while entries are pending (one per worker process).
REPLAY_EVERY_S = 1.0
_LOCK = threading.Lock()


class Outbox:
    """Pending final writes in a SQLite file; safe across threads and worker processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS pending (request_id TEXT PRIMARY KEY, "
                       "kind TEXT NOT NULL, row TEXT NOT NULL, reservation_id TEXT, "
                       "cost TEXT, kept_at REAL NOT NULL)")
            self._pending = int(db.execute("SELECT count(*) FROM pending").fetchone()[0])
        self._last_try = float("-inf")
        self._replaying = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def keep(self, rt: WorkerRuntime, kind: str, row: dict[str, Any],
             reservation_id: str | None, final: dict[str, Any] | None) -> None:
        """Keep a final write (the row, the reservation and the successful attempt's end, if
        any: workers.attempts.finalize) for a later replay."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                       (row["request_id"], kind, json.dumps(row, default=str), reservation_id,
                        None if final is None else json.dumps(final, default=str),
                        time.time()))
        self._pending += 1
        self._start_replayer(rt)
        log.warning("ledger unreachable: kept the final row of %s in %s", row["request_id"],
                    self.path)

    def pending(self) -> int:
        """Entries waiting for the database (as of the last write or replay in this process)."""
        return self._pending

    def replay(self, rt: WorkerRuntime) -> int:
        """Apply every pending entry the database now takes; returns how many were applied."""
        if not self._replaying.acquire(blocking=False):
            return 0  # another thread of this process is at it
        try:
            self._last_try = time.monotonic()
            with self._db() as db:
                entries = db.execute("SELECT request_id, kind, row, reservation_id, cost "
                                     "FROM pending ORDER BY kept_at").fetchall()
            done = 0
            for rid, kind, raw, reservation, cost in entries:
                try:
                    _apply(rt, kind, _load_row(raw), reservation, cost)
                except (LedgerError, SQLAlchemyError) as exc:
                    log.info("outbox replay stopped, database still unreachable: %s", exc)
                    break
                except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the rest
                    log.error("outbox entry %s could not be replayed (kept): %s", rid, exc)
                    continue
                with self._db() as db:
                    db.execute("DELETE FROM pending WHERE request_id = ?", (rid,))
                done += 1
            with self._db() as db:
                self._pending = int(db.execute("SELECT count(*) FROM pending").fetchone()[0])
            return done
        finally:
            self._replaying.release()

    def _start_replayer(self, rt: WorkerRuntime) -> None:
        # Replays must not wait for the next task: an idle worker would keep the rows forever.
        with _LOCK:
            thread = getattr(self, "_thread", None)
            if thread is not None and thread.is_alive():
                return
            self._thread = threading.Thread(target=self._replay_loop, args=(rt,), daemon=True,
                                            name="sluice-outbox")
            self._thread.start()

    def _replay_loop(self, rt: WorkerRuntime) -> None:
        while self._pending:
            time.sleep(REPLAY_EVERY_S)
            try:
                self.replay(rt)
            except Exception as exc:  # noqa: BLE001 - keep trying; the entries stay on disk
                log.error("outbox replay failed: %s", exc)

    def maybe_replay(self, rt: WorkerRuntime) -> None:
        """Replay if entries are pending and the last attempt is old enough (cheap otherwise);
        never raises into the task that asked."""
        if self._pending and time.monotonic() - self._last_try > REPLAY_EVERY_S:
            try:
                self.replay(rt)
            except Exception as exc:  # noqa: BLE001 - the entries stay on disk for later
                log.error("outbox replay failed: %s", exc)


def _load_row(raw: str) -> dict[str, Any]:
    row = json.loads(raw)
    for key in _MONEY:
        if row.get(key) is not None:
            row[key] = Decimal(row[key])
    return row


def _apply(rt: WorkerRuntime, kind: str, row: dict[str, Any], reservation: str | None,
           final: str | None) -> None:
    from workers.attempts import finalize

    stored = json.loads(final) if final else None
    with rt.session() as s:
        if final and not isinstance(stored, dict):
            # Kept by a worker of the previous release: the cost column holds the amount to
            # settle, and no attempt rows exist for it.
            first = ledger.finish(s, row)
            if first and reservation and rt.admission is not None:
                if kind == "ok":
                    rt.admission.settle(reservation, Decimal(final), session=s)
                else:
                    rt.admission.release(reservation, session=s)
            return
        finalize(s, rt, kind, row, reservation, stored)


def outbox_of(rt: WorkerRuntime) -> Outbox:
    """The outbox of this worker process, in ``settings.home`` (built on first use)."""
    box = getattr(rt, "_sluice_outbox", None)
    if box is None:
        with _LOCK:
            box = getattr(rt, "_sluice_outbox", None)
            if box is None:
                box = Outbox(Path(rt.settings.home) / "outbox.db")
                rt._sluice_outbox = box  # type: ignore[attr-defined]
    return box


@contextmanager
def final_write(rt: WorkerRuntime, kind: str, row: dict[str, Any], reservation_id: str | None,
                final: dict[str, Any] | None) -> Iterator[Session]:
    """A ledger session for a final write; if the database is unreachable, keep it instead.

    The body's error is swallowed only once the write is safe in the outbox: the caller goes
    on to answer the request, which the provider already served.
    """
    try:
        with rt.session() as s:
            yield s
    except (LedgerError, SQLAlchemyError) as exc:
        log.warning("final ledger write of %s failed (%s); keeping it in the outbox",
                    row["request_id"], str(exc).splitlines()[0] if str(exc) else exc)
        outbox_of(rt).keep(rt, kind, row, reservation_id, final)
