"""Tests read an answered request's ledger row once the worker has billed it.

The worker pushes an answer before its final ledger write (ARCHITECTURE.md, change 12): a few
milliseconds after a caller has its result the row is still ``running``. A test that reads
the ledger, a budget or a reservation on the answer therefore waits for the row to be final
first (bounded: a row that never finishes still fails the test's own assertion).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

#: The ledger databases of this run (tests.conftest.pg_url registers its own).
DATABASES: list[str] = []
#: Longest wait for a row to be final; the worker bills within milliseconds when healthy.
WAIT_S = 10.0


def wait_billed(request_id: str, timeout: float = WAIT_S) -> None:
    """Return once ``request_id``'s ledger row is not ``running`` in whichever of the run's
    databases holds it (at once when none does: a cache hit, a request of a ledger not
    registered here). A database that cannot be reached is passed over (an outage test's)."""
    import psycopg

    deadline = time.monotonic() + timeout
    for url in list(DATABASES):
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.Error:  # unreachable (stopped, dropped): nothing to wait for there
            continue
        with conn:
            while True:
                row = conn.execute("SELECT outcome FROM ledger WHERE request_id = %s",
                                   (request_id,)).fetchone()
                if row is not None and row[0] == "running" and time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                break
        if row is not None:
            return  # a request id is one database's


def wait_all_billed(request_ids: Iterable[str], timeout: float = WAIT_S) -> None:
    """:func:`wait_billed` for each of ``request_ids`` (one deadline for them all)."""
    deadline = time.monotonic() + timeout
    for rid in request_ids:
        wait_billed(rid, max(deadline - time.monotonic(), 0.0))


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


def wait_written(sessions: Any, request_id: str, timeout: float = WAIT_S) -> Any:
    """:func:`wait_row` for a row written off the answer's path (a partly cached request's
    ``:cached`` part, which the door writes after it answers): once it exists and is final,
    or, past ``timeout``, as it is (None: still none)."""
    deadline = time.monotonic() + timeout
    while True:
        found = wait_row(sessions, request_id, max(deadline - time.monotonic(), 0.0))
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


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
        # The answer names its request: a TaskHandle made from a bare send (tests do
        # ``TaskHandle(gateway._send(env))``) knows only its task id, ``<request id>~<tenant>``,
        # which no ledger row has (waiting on it returned at once: the races of e9ebb20).
        wait_billed(getattr(found, "request_id", None) or self.request_id)
        return found

    result._waits_billed = True  # type: ignore[attr-defined]
    return result
