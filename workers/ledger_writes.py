"""The ledger writes a group commit sends (workers.group_commit): sent attempt rows, alone or
several on one connection, and which database errors leave nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.domain.errors import LedgerError


def refused(exc: BaseException) -> bool:
    """Did the database refuse a group-committed statement (a bad value, a constraint), or
    was it never sent? Then nothing of it was written and each item is written alone. A
    broken connection may have committed it: that error is every caller's, as it would be
    for a single write (an attempt row written twice would be charged twice)."""
    from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError):
            return (isinstance(seen, (DataError, IntegrityError, ProgrammingError))
                    and not seen.connection_invalidated)
        if isinstance(seen, (ValueError, TypeError, KeyError)):
            return True  # raised while the statement was built, before anything was sent
        if seen.__cause__ is None and isinstance(seen, LedgerError):
            return True  # ours, before sending (rows of different columns)
        seen = seen.__cause__
    return False


def write_attempt(conn: Any, item: tuple[dict[str, Any], Any]) -> int | None:
    """One sent attempt row (models.db.attempts.begin, or begin_held under a reservation)."""
    from models.db import attempts
    from models.db.held_attempts import begin_held

    values, hold = item
    return attempts.begin(conn, values) if hold is None else begin_held(conn, values, *hold)


def write_attempts(conn: Any, items: Sequence[tuple[dict[str, Any], Any]]) -> list[int | None]:
    """Several sent attempt rows on one connection: those under no reservation in one
    INSERT (one commit), each held one in its own statement (its reservation's check); a held
    one that fails is its caller's error alone (workers.group_commit.Failed)."""
    from sqlalchemy.exc import DBAPIError

    from models.db import attempts
    from workers.group_commit import Failed

    free = [i for i, (_, hold) in enumerate(items) if hold is None]
    out: list[Any] = [None] * len(items)
    for i, aid in zip(free, attempts.begin_many(conn, [items[i][0] for i in free]),
                      strict=True):
        out[i] = aid
    wrote = bool(free)
    for i, item in enumerate(items):
        if item[1] is None:
            continue
        try:
            out[i] = write_attempt(conn, item)
            wrote = True
        except Exception as exc:  # noqa: BLE001 - this item's own outcome
            if not wrote and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                raise  # a stale pooled connection, nothing written: the whole batch again
            # Each held row is its own autocommit statement: those before it are committed,
            # so the batch must not be written again (a second ``sent`` row is charged twice).
            out[i] = Failed(exc)
    return out
