"""Ledger repository: idempotent writes keyed on the request id (spend queries: models.db.spend)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db.tables import LedgerRow
from models.domain.errors import LedgerError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult

_COLUMNS = {c.key for c in LedgerRow.__table__.columns} - {"id"}


def row_from_result(request: ChatRequest, result: ChatResult, *, outcome: str = "ok",
                    error_code: str | None = None, batch: bool = False,
                    prompt_hash: str = "", now: datetime | None = None) -> dict[str, Any]:
    """The ledger row (as column values) for one finished request."""
    u = result.usage
    return {
        "request_id": request.request_id,
        "created_at": now or datetime.now(timezone.utc),
        "org": request.org, "team": request.team, "feature": request.feature,
        "user": request.user, "lane": request.lane,
        "tier": result.route.tier, "provider": result.provider, "model": result.model,
        "backend": result.route.backend, "route_reason": result.route.reason[:200],
        "route_score": result.route.score,
        "task_type": result.route.task_type, "rung": result.route.rung,
        "outcome": outcome, "error_code": error_code, "cache_hit": result.cache_hit, "batch": batch,
        "input_uncached": u.input_uncached, "cache_read": u.cache_read,
        "cache_write_5m": u.cache_write_5m, "cache_write_1h": u.cache_write_1h,
        "output": u.output, "reasoning": u.reasoning,
        "cost": result.cost, "baseline_cost": result.baseline_cost,
        "list_cost": result.list_cost,
        "price_version": result.price_version,
        "latency_ms": result.timings.total_ms, "queued_ms": result.timings.queued_ms,
        "provider_ms": result.timings.provider_ms, "prompt_hash": prompt_hash,
        "deployment": result.deployment,
        "purpose": purpose_of(request),
    }


def purpose_of(request: ChatRequest) -> str:
    """``serve``, or ``shadow``/``judge`` for the quality guard's own requests (workers.shadow)."""
    from models.domain.quality import PURPOSE_TAG

    return request.tags.get(PURPOSE_TAG, "serve")


def record(session: Session, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its request id is already there; True when this call wrote it.

    A Celery task may run twice (acks late, worker lost): the second write is a no-op, so
    the ledger never bills a request twice. The caller commits.
    """
    values = _columns(row)
    unknown = set(values) - _COLUMNS
    if unknown:
        raise LedgerError(f"ledger row has unknown columns {sorted(unknown)}; "
                          "add them to models/db/tables.py and a migration")
    try:
        res = session.execute(_insert_once(session.get_bind().dialect.name), values)
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not write ledger row {row.get('request_id')}: {exc}; "
                          "check SLUICE_DATABASE__URL and that `alembic upgrade head` ran") from exc
    return res.first() is not None


def _columns(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values keyed by column (``user`` is stored as ``user_id``)."""
    return {("user_id" if k == "user" else k): v for k, v in row.items()}


@functools.cache
def _insert_once(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING request_id``, built once.

    The values come as execute parameters, so the statement (and its compiled form) is shared
    by every write instead of being rebuilt per row on the hot path.
    """
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise LedgerError(f"the ledger supports PostgreSQL and SQLite, not {dialect}")
    table = LedgerRow.__table__
    # RETURNING, not rowcount: psycopg 3 reports rowcount -1 here, which read as "wrote it"
    # and let every duplicate delivery call (and pay) the provider again.
    return insert(table).on_conflict_do_nothing(index_elements=["request_id"]).returning(
        table.c.request_id)


def claim_fast(engine: Any, row: dict[str, Any]) -> bool:
    """Claim ``row['request_id']`` in one round trip when nobody has: True when this call did.

    ``engine`` is an autocommit engine (models.db.engine.autocommit_engine), so the INSERT is
    its own transaction. False means a row exists: ``claim`` in a session decides what it is.
    """
    now = datetime.now(timezone.utc)
    values = _columns(dict(row, outcome="running", created_at=now, heartbeat_at=now))
    try:
        with engine.connect() as conn:
            return conn.execute(_insert_once(engine.dialect.name), values).first() is not None
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not claim ledger row {row.get('request_id')}: {exc}") from exc


def claim_fast_many(engine: Any, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """:func:`claim_fast` of several rows in one INSERT (one round trip, one transaction):
    True for each row this call claimed. A request id twice in ``rows`` (two copies of a
    message arriving together) is claimed by its first row only."""
    now = datetime.now(timezone.utc)
    values = [_columns(dict(r, outcome="running", created_at=now, heartbeat_at=now))
              for r in rows]
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        first.setdefault(v["request_id"], i)
    unique = [values[i] for i in first.values()]
    if len({frozenset(v) for v in unique}) != 1:
        raise LedgerError("rows of different columns: claimed one at a time")
    try:
        with engine.connect() as conn:
            claimed = {r[0] for r in conn.execute(_insert_once(engine.dialect.name), unique)}
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not claim {len(unique)} ledger rows: {exc}") from exc
    return [first[v["request_id"]] == i and v["request_id"] in claimed
            for i, v in enumerate(values)]


def get(session: Session, request_id: str) -> LedgerRow | None:
    """The ledger row of ``request_id``, if written."""
    return session.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).first()


def claim(session: Session, row: dict[str, Any], *, lease_s: float,
          now: datetime | None = None, claim_ttl_s: float | None = None,
          sent_at: datetime | None = None) -> str:
    """Claim ``row['request_id']`` for execution before the provider is called.

    Returns ``claimed`` (go ahead), ``resumed`` (go ahead: this call took over the expired
    claim of a dead run, which may have paid a provider already), ``retried`` (go ahead, as a
    first run: the request had ended in an error), ``done`` (a previous run finished it:
    do not call the provider again), ``running`` (another run holds a live claim) or
    ``foreign`` (another tenant already used this request id). A claim whose heartbeat
    stopped ``claim_ttl_s`` ago belongs to a dead worker and can be taken over (a live run
    renews it: workers.heartbeat); one written by a worker that sends no heartbeat (the
    previous release) expires after ``lease_s``. An errored request can be retried, by a
    message sent after its failed run began (``sent_at``: the caller's retry); a copy of the
    message that run took (the in-flight sweeper's re-send, a redelivery) gets ``ended``.
    The caller commits.
    """
    now = now or datetime.now(timezone.utc)
    if session.get_bind().dialect.name == "postgresql":
        # A claim lost in a server crash only means the request may run again, which the
        # final write tolerates; so it need not wait for the WAL flush. The final row does.
        session.execute(text("SET LOCAL synchronous_commit = off"))
    skeleton = dict(row, outcome="running", created_at=now, heartbeat_at=now)
    if record(session, skeleton):
        return "claimed"
    existing = get(session, row["request_id"])
    if existing is None:  # deleted between the two statements; try once more
        return "claimed" if record(session, skeleton) else "running"
    if (existing.org, existing.team) != (row.get("org", "default"), row.get("team")):
        # Another tenant used this request id first: never hand its row or answer over.
        return "foreign"
    if existing.outcome in ("ok", "cache_hit"):
        return "done"
    beat = existing.heartbeat_at
    # A heartbeat older than the claim was left by an earlier run: a worker of the previous
    # release took the row over (it resets only created_at) and sends none; its rule applies.
    if (beat is not None and claim_ttl_s is not None
            and _aware(beat) >= _aware(existing.created_at)):
        stale = now.timestamp() - _aware(beat).timestamp() > claim_ttl_s
    else:
        stale = now.timestamp() - _aware(existing.created_at).timestamp() > lease_s
    if (existing.outcome == "error" and sent_at is not None
            and _aware(sent_at) < _aware(existing.created_at)):
        # Sent before the failed run took it: a copy of that run's message, not a retry. The
        # caller was told of the error; running the copy would pay the provider again.
        return "ended"
    if existing.outcome == "error" or (existing.outcome == "running" and stale):
        stmt = (update(LedgerRow).where(LedgerRow.request_id == row["request_id"],
                                        LedgerRow.outcome == existing.outcome,
                                        LedgerRow.created_at == existing.created_at)
                .values(outcome="running", created_at=now, heartbeat_at=now))
        if session.execute(stmt).rowcount:
            return "retried" if existing.outcome == "error" else "resumed"
    return "running"


def finish(session: Session, row: dict[str, Any]) -> bool:
    """Write the final values of a claimed row; True exactly once per claim (settle then)."""
    params = _columns(row)
    params["b_request_id"] = params.pop("request_id")
    try:
        return bool(session.execute(_finish_once(), params).rowcount)
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not finish ledger row {row['request_id']}: {exc}") from exc


@functools.cache
def _finish_once() -> Any:
    """``UPDATE ... WHERE request_id = :b_request_id AND outcome = 'running'``, built once; the
    SET clause comes from the execute parameters (a Core statement: no ORM bulk-update work)."""
    table = LedgerRow.__table__
    return update(table).where(table.c.request_id == bindparam("b_request_id"),
                               table.c.outcome == "running")


def add_cost(session: Session, request_id: str, cost: Decimal, estimated: Decimal) -> None:
    """Add attempts a second run paid for to a row another run already finished."""
    session.execute(update(LedgerRow).where(LedgerRow.request_id == request_id)
                    .values(cost=LedgerRow.cost + cost,
                            estimated_cost=LedgerRow.estimated_cost + estimated,
                            attempts=LedgerRow.attempts + 1))


def _aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
