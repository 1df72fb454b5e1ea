"""An attempt written only while the reservation that pays for it is open, renewed as it is."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from models.db.attempts import AttemptRow, sent_row
from models.db.budgets import ReservationRow


def begin_held(session: Session | Connection, values: dict[str, Any], reservation_id: str,
               until: datetime) -> int | None:
    """Write an attempt as ``sent`` and return its id, or None (nothing written) when
    ``reservation_id`` is no longer open; the reservation's expiry is pushed to at least
    ``until`` by the same statement.

    Why one statement: between the worker's second check and this row, its lease may lapse
    (a loaded worker waiting for a connection, a late heartbeat) and the governor free the
    money; a call sent then would spend outside any reservation. The governor never frees a
    reservation with an unsettled attempt, and its recheck of the locked row sees the pushed
    expiry, so once this commits the reservation stays held until the attempt is settled.
    """
    row = dict(sent_row(values), h_rid=reservation_id, h_until=until)
    for c in AttemptRow.__table__.c:  # a text statement gets no Python-side defaults
        if c.name not in row and c.default is not None and c.default.is_scalar:
            row[c.name] = c.default.arg
    names = tuple(sorted(k for k in row if not k.startswith("h_")))
    dialect = session.get_bind().dialect if isinstance(session, Session) else session.dialect
    if dialect.name == "postgresql":
        return session.execute(_held_insert(names), row).scalar()
    # Elsewhere (SQLite): two statements in the caller's transaction, which serializes writers.
    renewed = session.execute(_renew(), row).rowcount
    if not renewed:
        return None
    return int(session.execute(insert(AttemptRow.__table__).returning(AttemptRow.__table__.c.id),
                               {k: row[k] for k in names}).scalar_one())


def _renew() -> Any:
    return text("UPDATE reservations SET expires_at = max(expires_at, :h_until) "
                "WHERE id = :h_rid AND state = 'open'").bindparams(_until())


def _until() -> Any:
    """The new expiry, bound as the column's type (SQLite keeps datetimes as text)."""
    return bindparam("h_until", type_=ReservationRow.__table__.c.expires_at.type)


@functools.cache
def _held_insert(names: tuple[str, ...]) -> Any:
    """``WITH held AS (UPDATE reservations ... RETURNING id) INSERT INTO attempts (...)
    SELECT ... WHERE EXISTS (SELECT FROM held) RETURNING id``, built once per column set (as
    text: a Core UPDATE would also SET every execute parameter named like its columns)."""
    t = AttemptRow.__table__
    cols = ", ".join(names)
    values = ", ".join(f":{n}" for n in names)
    return text(
        "WITH held AS (UPDATE reservations SET expires_at = greatest(expires_at, :h_until) "
        "WHERE id = :h_rid AND state = 'open' RETURNING id) "
        f"INSERT INTO attempts ({cols}) SELECT {values} WHERE EXISTS (SELECT 1 FROM held) "
        "RETURNING id").bindparams(_until(),
                                   *[bindparam(n, type_=t.c[n].type) for n in names])
