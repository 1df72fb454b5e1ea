"""Table definitions of the ledger; Alembic migrations import only this module."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from typing import Any

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, Index, Integer, Numeric, String,
                        UniqueConstraint)
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
    #: The deployment that answered (models/domain/deployments.py); '' for rows from before
    #: deployments, and cache hits: ``sluice spend --by deployment`` shows the provider then.
    deployment: Mapped[str] = mapped_column(String(64), nullable=False, default="",
                                            server_default="")
    #: ``serve`` (the caller's answer), ``shadow`` (the other tier's, for judging) or
    #: ``judge`` (an LLM judge's call): only ``serve`` rows count as savings.
    purpose: Mapped[str] = mapped_column(String(8), nullable=False, default="serve",
                                         server_default="serve")

    __table_args__ = (
        Index("ix_ledger_created_at", "created_at"),
        Index("ix_ledger_team_feature", "team", "feature"),
    )


class JudgementRow(Base):
    """One judged (served, shadow) pair: which tiers, the judge's verdict and what it cost."""

    __tablename__ = "judgements"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    #: The served request's id (one judgement per served request and org/team).
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    #: The tier and model that answered the caller, and the shadow's.
    served_tier: Mapped[str] = mapped_column(String(16), nullable=False)
    served_model: Mapped[str] = mapped_column(String(128), nullable=False)
    shadow_model: Mapped[str] = mapped_column(String(128), nullable=False)
    #: exact | json | embedding | llm
    judge: Mapped[str] = mapped_column(String(16), nullable=False)
    #: None while an LLM judge's votes are out.
    agree: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    #: LLM judge: the vote with the served answer first, and with it second.
    vote_first: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    vote_second: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: What the served answer cost, what the shadow cost, what judging cost.
    served_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    shadow_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    judge_cost: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: A ladder feature's pair: the served request's task type, the rung (index in the ladder
    #: it climbed) that answered, and the rung the shadow was sent to (None off a ladder).
    task_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    served_rung: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shadow_rung: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        UniqueConstraint("org", "team", "request_id", name="uq_judgements_request"),
        Index("ix_judgements_feature_created", "feature", "created_at"),
        # The floor reads one org's newest pairs of a feature (migration 0015).
        Index("ix_judgements_org_feature", "org", "feature", "id"),
    )


class FeedbackRow(Base):
    """A caller's outcome for a request: a thumbs up/down and/or a task metric."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    #: Copied from the request's ledger row, so feedback joins judgements by feature and tier.
    feature: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    tier: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    #: +1 thumbs up, -1 thumbs down, None: a metric only.
    thumb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metric: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_feedback_request", "org", "team", "request_id"),)


class RoutingMoveRow(Base):
    """A change of one org's feature's routing threshold by the quality floor or an operator."""

    __tablename__ = "routing_moves"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Whose feature moved: feature names are chosen per org, so one org's judged pairs must
    #: never move another's routing (migration 0015).
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default",
                                     server_default="default")
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    before: Mapped[float] = mapped_column(Float, nullable=False)
    after: Mapped[float] = mapped_column(Float, nullable=False)
    #: flagship | cheap | revert
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    actor: Mapped[str] = mapped_column(String(128), nullable=False, default="quality-floor")
    #: The move this one undoes (``sluice quality revert``).
    reverts: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_routing_moves_org_feature", "org", "feature", "id"),)
