"""Table definitions of the ledger; Alembic migrations import only this module."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

_PICO = Decimal(10) ** 12


class PicoDollars(TypeDecorator[Decimal]):
    """Money on SQLite as an integer count of 1e-12 USD, since SQLite has no exact decimal."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int((Decimal(value) * _PICO).to_integral_value())

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(int(value)) / _PICO


#: Money column: NUMERIC(24, 12) on PostgreSQL, exact pico-dollars on SQLite; never a float.
MONEY = Numeric(24, 12).with_variant(PicoDollars(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every ledger table."""


class LedgerRow(Base):
    """One row per request (idempotent on ``request_id``): attribution, route, tokens, cost."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    user: Mapped[str | None] = mapped_column("user_id", String(64), nullable=True)
    lane: Mapped[str] = mapped_column(String(16), nullable=False)
    tier: Mapped[str] = mapped_column(String(16), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    backend: Mapped[str] = mapped_column(String(8), nullable=False)
    route_reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    route_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: ok | cache_hit | error
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cache_hit: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    batch: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    input_uncached: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cache_read: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cache_write_5m: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cache_write_1h: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    output: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reasoning: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: What the request would have cost with no lever: all flagship, no cache of any kind.
    baseline_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: The routed model's list price for these tokens: no prompt caching, no batch discount.
    #: baseline - list = saved by routing; list - cost = saved by prompt caching and batching.
    list_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: The part of ``cost`` we estimated: attempts whose bill is unknown (a timeout, a broken
    #: stream, a worker lost mid-call), charged at their best estimate (models.db.attempts).
    estimated_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: Provider attempts this request made (retries, fallbacks, runs); their sum is ``cost``.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: While ``running``: the live run's last heartbeat; a claim is stale only when it stops.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    price_version: Mapped[str] = mapped_column(String(32), nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    queued_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    provider_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    #: The static part carried volatile content (timestamps, ids): its prefix cannot cache.
    volatile_prefix: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: SHA-256 of the normalized prompt; the text itself is not stored by default.
    prompt_hash: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    #: ``chat`` or ``embedding`` (models/domain/embedding.py): ``sluice spend --by kind``.
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="chat",
                                      server_default="chat")
    #: Embedding inputs this row covers (0 for chat); input tokens are ``input_uncached``.
    items: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    #: A feature ladder's decision: the request's task type and the rung it was routed to
    #: (its index in the ladder climbed, weakest 0); the reason is in ``route_reason``.
    task_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rung: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_ledger_created_at", "created_at"),
        Index("ix_ledger_team_feature", "team", "feature"),
    )
