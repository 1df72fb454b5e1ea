"""Engine and session factory for the ledger database (PostgreSQL, or SQLite embedded)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """Build an engine for ``url``; SQLite gets WAL and a busy timeout so threads can share it."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # No pre-ping: it costs a round trip per checkout on the hot path. A connection the
        # server dropped fails its statement, the pool is invalidated, and the caller retries.
        kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=1800)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def autocommit_engine(engine: Engine, pool_size: int, *, durable: bool = False) -> Engine:
    """A small PostgreSQL engine beside ``engine`` for one-statement writes on the hot path.

    Autocommit (the statement is the transaction: no BEGIN / COMMIT round trips), no pre-ping,
    and asynchronous commit unless ``durable``: callers use that only for writes whose loss
    in a server crash is harmless (a reservation a worker re-checks, a claim the final write
    tolerates). A provider attempt's row is durable: it is what bills a call a crash hid.
    """
    fast = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=pool_size,
                         max_overflow=pool_size, pool_pre_ping=False)
    event.listen(fast, "connect", _sync_commit if durable else _async_commit)
    return fast


def _sync_commit(dbapi_conn: Any, _record: Any) -> None:
    # Durable even on a server whose default is asynchronous commit.
    with dbapi_conn.cursor() as cur:
        cur.execute("SET synchronous_commit = on")
    dbapi_conn.commit()


def _async_commit(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
    dbapi_conn.commit()  # a SET inside a transaction that is rolled back would not stick


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
