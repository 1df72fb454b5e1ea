"""Provider attempts: one row per call a provider may bill, written before it is sent."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (BigInteger, Boolean, DateTime, Index, Integer, String, case, func,
                        insert, select, update)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import MONEY, Base

#: What became of an attempt. ``sent`` is the state while the call runs; a run that dies leaves
#: it there, and the run that takes over charges it as ``lost``.
OUTCOMES: tuple[str, ...] = ("sent", "ok", "refused", "timeout", "broken_stream",
                             "unparseable", "abandoned", "lost")
#: How its cost is known: from the provider's usage, estimated by us, or nothing to bill.
BILLING: tuple[str, ...] = ("exact", "estimated", "none")


class AttemptRow(Base):
    """One provider attempt of a request: first try, retry, fallback, stream or batch."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    #: The run (one delivery of the task) that made it; a resumed run has another.
    run: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    #: The deployment it was sent to ('' before deployments existed).
    deployment: Mapped[str] = mapped_column(String(64), nullable=False, default="",
                                            server_default="")
    #: call | retry | fallback (and ``stream``/``batch`` flags below)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    stream: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    batch: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    billing: Mapped[str] = mapped_column(String(16), nullable=False, default="none")
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: The worst case of this attempt: what a lost one is charged.
    worst_case: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Its cost went into a budget settlement (each attempt's exactly once).
    settled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (Index("ix_attempts_request_id", "request_id"),)


def begin(session: Session | Connection, values: dict[str, Any]) -> int:
    """Write an attempt as ``sent`` (before the call) and return its id; the caller commits
    (an autocommit connection commits it at once)."""
    return int(session.execute(_begin_once(), sent_row(values)).scalar_one())


def begin_many(conn: Connection, values: Sequence[dict[str, Any]]) -> list[int]:
    """:func:`begin` of several attempts in one INSERT (one commit on an autocommit
    connection); their ids in the order given."""
    if not values:
        return []
    rows = [sent_row(v) for v in values]
    if len({frozenset(r) for r in rows}) != 1:
        raise ValueError("attempts of different columns: written one at a time")
    return [int(r[0]) for r in conn.execute(_begin_many_once(), rows)]


@functools.cache
def _begin_many_once() -> Any:
    """``INSERT INTO attempts ... RETURNING id`` whose ids come back in parameter order."""
    return insert(AttemptRow.__table__).returning(AttemptRow.__table__.c.id,
                                                  sort_by_parameter_order=True)


def sent_row(values: dict[str, Any]) -> dict[str, Any]:
    """An attempt's columns as it is written before the call: ``sent``, not settled."""
    return dict(values, outcome="sent", billing="estimated", settled=False,
                created_at=values.get("created_at") or datetime.now(timezone.utc))


@functools.cache
def _begin_once() -> Any:
    """``INSERT INTO attempts ... RETURNING id``, built once: the values come as execute
    parameters, so every attempt shares one compiled statement (it is on every request's path)."""
    return insert(AttemptRow.__table__).returning(AttemptRow.__table__.c.id)


def end(session: Session, attempt_id: int, *, outcome: str, billing: str, cost: Decimal,
        input_tokens: int = 0, output_tokens: int = 0, error_code: str | None = None,
        now: datetime | None = None) -> bool:
    """Record what became of a ``sent`` attempt; True exactly once per attempt."""
    res = session.execute(update(AttemptRow)
                          .where(AttemptRow.id == attempt_id, AttemptRow.outcome == "sent")
                          .values(outcome=outcome, billing=billing, cost=cost,
                                  input_tokens=input_tokens, output_tokens=output_tokens,
                                  error_code=error_code,
                                  finished_at=now or datetime.now(timezone.utc)))
    return bool(res.rowcount)


def charge_lost(session: Session, request_id: str, *, not_run: str | None = None,
                now: datetime | None = None) -> int:
    """Charge the ``sent`` attempts of ``request_id`` (of runs other than ``not_run``) at their
    worst case, marked estimated: a worker died mid-call, or could not record the end; the
    provider may have billed them. Returns how many. The caller commits."""
    where = [AttemptRow.request_id == request_id, AttemptRow.outcome == "sent"]
    if not_run is not None:
        where.append(AttemptRow.run != not_run)
    res = session.execute(update(AttemptRow).where(*where)
                          .values(outcome="lost", billing="estimated",
                                  cost=AttemptRow.worst_case, error_code="worker_lost",
                                  finished_at=now or datetime.now(timezone.utc)))
    return int(res.rowcount or 0)


def charged(session: Session, request_id: str) -> tuple[Decimal, Decimal, int]:
    """(total cost, estimated part, number of attempts) of ``request_id`` so far."""
    row = session.execute(
        select(func.coalesce(func.sum(AttemptRow.cost), 0),
               func.coalesce(func.sum(case((AttemptRow.billing == "estimated", AttemptRow.cost),
                                           else_=0)), 0),
               func.count())
        .where(AttemptRow.request_id == request_id)).one()
    return Decimal(row[0]), Decimal(row[1]), int(row[2])


def settle_all(session: Session, request_id: str) -> Decimal:
    """Mark every finished, unsettled attempt of ``request_id`` settled; returns their cost
    (what the request's settlement must spend). The caller commits."""
    return settle_all_split(session, request_id)[0]


def settle_all_split(session: Session, request_id: str) -> tuple[Decimal, Decimal]:
    """:func:`settle_all`, with the estimated part of what it settled apart."""
    rows = session.execute(update(AttemptRow)
                           .where(AttemptRow.request_id == request_id,
                                  AttemptRow.settled.is_(False), AttemptRow.outcome != "sent")
                           .values(settled=True)
                           .returning(AttemptRow.cost, AttemptRow.billing)).all()
    total = sum((Decimal(c) for c, _ in rows), Decimal(0))
    estimated = sum((Decimal(c) for c, b in rows if b == "estimated"), Decimal(0))
    return total, estimated


def of_request(session: Session, request_id: str) -> list[AttemptRow]:
    """Every attempt of ``request_id``, oldest first."""
    return list(session.scalars(select(AttemptRow).where(AttemptRow.request_id == request_id)
                                .order_by(AttemptRow.id)))


def unsettled(session: Session, request_id: str) -> Decimal:
    """What the finished attempts of ``request_id`` not yet settled were charged."""
    total = session.scalar(select(func.coalesce(func.sum(AttemptRow.cost), 0))
                           .where(AttemptRow.request_id == request_id,
                                  AttemptRow.settled.is_(False), AttemptRow.outcome != "sent"))
    return Decimal(total or 0)


def exists(session: Session, attempt_id: int) -> bool:
    """Whether the attempt row ``attempt_id`` is there."""
    return session.get(AttemptRow, attempt_id) is not None
