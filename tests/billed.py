"""Tests read an answered request's ledger row once the worker has billed it.

The worker pushes an answer before its final ledger write (ARCHITECTURE.md, change 12): a few
milliseconds after a caller has its result the row is still ``running``. A test that reads
the ledger, a budget or a reservation on the answer therefore waits for the row to be final
first (bounded: a row that never finishes still fails the test's own assertion).
"""

from __future__ import annotations

import time
from typing import Any

#: The ledger databases of this run (tests.conftest.pg_url registers its own).
DATABASES: list[str] = []
#: Longest wait for a row to be final; the worker bills within milliseconds when healthy.
WAIT_S = 10.0


def wait_billed(request_id: str, timeout: float = WAIT_S) -> None:
    """Return once ``request_id``'s ledger row is not ``running`` in the run's database (at
    once when it has no row there: a cache hit, or another database's request)."""
    if not DATABASES:
        return
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(DATABASES[0], autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT outcome FROM ledger WHERE request_id = %s",
                               (request_id,)).fetchone()
            if row is None or row[0] != "running" or time.monotonic() > deadline:
                return
            time.sleep(0.005)


def wait_row(sessions: Any, request_id: str, timeout: float = WAIT_S) -> Any:
    """The ledger row of ``request_id`` through ``sessions``, once it is final (or, past
    ``timeout``, as it is); None when there is none."""
    from models.db import ledger

    deadline = time.monotonic() + timeout
    while True:
        with sessions() as s:
            found = ledger.get(s, request_id)
        if found is None or found.outcome != "running" or time.monotonic() > deadline:
            return found
        time.sleep(0.005)


def install() -> None:
    """Make every chat and embedding handle's answer wait for its row to be billed (once
    per process): both workers push the answer before their ledger write."""
    from queues.embeddings import EmbeddingHandle
    from queues.handle import TaskHandle

    for handle in (TaskHandle, EmbeddingHandle):
        if getattr(handle.result, "_waits_billed", False):
            continue
        handle.result = _waiting(handle.result)  # type: ignore[method-assign]


def _waiting(answer: Any) -> Any:
    def result(self: Any, timeout: float | None = None) -> Any:
        found = answer(self, timeout)
        wait_billed(self.request_id)
        return found

    result._waits_billed = True  # type: ignore[attr-defined]
    return result
