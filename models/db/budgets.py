"""Budget tables (budgets, reservations, pauses, alerts) and the budget repository functions."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import MONEY, Base, LedgerRow
from models.domain.budget import (
    DEPLOYMENT,
    SCOPES,
    WINDOWS,
    Budget,
    check_scope,
    check_window,
    default_org,
    window_bounds,
)


class BudgetRow(Base):
    """One budget: a hard limit (and soft threshold) on a scope over a window, with its usage."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Whose budget it is (part of its identity and of matching): an org name, or ``*`` for a
    #: deployment-wide lane budget (models.domain.budget.DEPLOYMENT).
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default",
                                     server_default="default")
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    window: Mapped[str] = mapped_column(String(16), nullable=False)
    hard_limit: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    soft_limit: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    #: Settled spend of the current window.
    spent: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    #: Sum of the open reservations against this budget (kept across window rollovers).
    reserved: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: When the window rolls over; NULL for a ``total`` budget.
    resets_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("org", "scope", "key", "window", name="uq_budgets_org_scope_key_window"),
        # A bug in reserve/settle arithmetic fails loudly here instead of drifting silently.
        CheckConstraint("spent >= 0", name="ck_budgets_spent_nonneg"),
        CheckConstraint("reserved >= 0", name="ck_budgets_reserved_nonneg"),
    )


class ReservationRow(Base):
    """A worst-case amount held against budgets until it settles, is released or expires."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    #: ``org/team`` of the request: request ids are unique per tenant only.
    owner: Mapped[str | None] = mapped_column(String(140), nullable=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    #: Ids of the budgets the amount is held against, comma-separated in ascending order.
    budget_ids: Mapped[str] = mapped_column(Text, nullable=False)
    #: open | settled | released | expired
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    actual: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    queue: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_reservations_state_expires", "state", "expires_at"),
        Index("ix_reservations_request_id", "request_id"),
        Index("ix_reservations_closed_at", "closed_at"),
    )


class PauseRow(Base):
    """A durable queue pause: by an operator or by an exhausted lane/org budget."""

    __tablename__ = "pauses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    #: ``operator`` or ``budget:<id>``: one pause per queue and cause.
    cause: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(300), nullable=False)
    budget_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("budgets.id", ondelete="CASCADE"), nullable=True)
    #: The budget's window and hard limit when it paused: a rollover or a raise resumes it.
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    hard_limit: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (UniqueConstraint("queue", "cause", name="uq_pauses_queue_cause"),)


class AlertRow(Base):
    """A soft- or hard-limit alert, at most one per budget, window and kind."""

    __tablename__ = "budget_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("budgets.id", ondelete="CASCADE"), nullable=False)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: soft | hard
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: When the webhook took it (NULL: not yet, or no webhook).
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        UniqueConstraint("budget_id", "window_start", "kind", name="uq_alerts_once_per_window"),
    )


def to_budget(row: BudgetRow) -> Budget:
    """The pure :class:`Budget` of a row."""
    return Budget(scope=row.scope, key=row.key, window=row.window, hard_limit=row.hard_limit,
                  soft_limit=row.soft_limit, spent=row.spent, reserved=row.reserved,
                  window_start=aware(row.window_start),
                  resets_at=None if row.resets_at is None else aware(row.resets_at), id=row.id,
                  webhook_url=row.webhook_url, org=row.org)


def aware(ts: datetime) -> datetime:
    """``ts`` as an aware UTC datetime (SQLite hands back naive ones, written in UTC)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def insert_ignore(session: Session, table: Any, values: dict[str, Any],
                  keys: list[str]) -> bool:
    """INSERT ``values`` unless a row with equal ``keys`` exists; True when this call wrote it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not rowcount: SQLAlchemy 2.1 reports rowcount -1 for an INSERT that fetches
    # an autoincrement key, which would make every duplicate look new.
    stmt = (insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
            .returning(*[table.c[k] for k in keys]))
    return session.execute(stmt).first() is not None


def change_budgets(ids: list[int], *, spent: Decimal = Decimal(0),
                   reserved: Decimal = Decimal(0), now: datetime) -> Any:
    """UPDATE adding ``spent`` and ``reserved`` to the budgets ``ids``, RETURNING their rows.

    The rows are locked in id order first, the order the reserving statement uses too, so
    concurrent settles, releases and reservations over shared budgets never deadlock.
    """
    locked = (select(BudgetRow.id).where(BudgetRow.id.in_(ids)).order_by(BudgetRow.id)
              .with_for_update().cte("locked").prefix_with("MATERIALIZED"))
    values: dict[str, Any] = {"updated_at": now}
    if spent:
        values["spent"] = BudgetRow.spent + spent
    if reserved:
        values["reserved"] = BudgetRow.reserved + reserved
    return (update(BudgetRow).where(BudgetRow.id == locked.c.id).values(**values)
            .returning(BudgetRow))


def set_budget(session: Session, scope: str, key: str, window: str, *, hard: Decimal,
               soft: Decimal | None = None, webhook_url: str | None = None,
               org: str | None = None, now: datetime | None = None) -> Budget:
    """Create or change a budget of ``org`` (None: the scope's default, see
    :func:`models.domain.budget.default_org`); the caller commits.

    A new budget starts from what the ledger already shows for its scope (in its org) in the
    current window, so a daily budget set at 15:00 counts the morning's spend too. Changing a
    budget keeps its usage.
    """
    org = default_org(scope, key) if org is None else org
    check_scope(scope, key, org)
    check_window(window)
    now = now or datetime.now(timezone.utc)
    row = session.scalars(_one(org, scope, key, window).with_for_update()).first()
    if row is None:
        start, resets = window_bounds(window, now)
        spent = ledger_spend(session, scope, key, None if window == "total" else start, org=org)
        row = BudgetRow(org=org, scope=scope, key=key, window=window, hard_limit=hard,
                        soft_limit=soft, spent=spent, reserved=Decimal(0), window_start=start,
                        resets_at=resets, webhook_url=webhook_url, updated_at=now)
        session.add(row)
    else:
        row.hard_limit, row.soft_limit, row.updated_at = hard, soft, now
        if webhook_url is not None:
            row.webhook_url = webhook_url or None
    session.flush()
    return to_budget(row)


def _one(org: str, scope: str, key: str, window: str) -> Any:
    return select(BudgetRow).where(BudgetRow.org == org, BudgetRow.scope == scope,
                                   BudgetRow.key == key, BudgetRow.window == window)


def ledger_spend(session: Session, scope: str, key: str, since: datetime | None, *,
                 org: str = DEPLOYMENT) -> Decimal:
    """What the ledger records as spent by ``scope``/``key`` of ``org`` (DEPLOYMENT: of
    every org) since ``since`` (all time if None)."""
    if scope == "key":
        return Decimal(0)  # the ledger does not name keys: a key's budget counts from its set
    column = {"org": LedgerRow.org, "lane": LedgerRow.lane, "team": LedgerRow.team,
              "feature": LedgerRow.feature, "user": LedgerRow.user}[scope]
    stmt = select(func.coalesce(func.sum(LedgerRow.cost), 0)).where(column == key)
    if org != DEPLOYMENT:
        stmt = stmt.where(LedgerRow.org == org)
    if since is not None:
        stmt = stmt.where(LedgerRow.created_at >= since)
    return Decimal(session.scalar(stmt) or 0)


def get_budget(session: Session, scope: str, key: str, window: str,
               org: str | None = None) -> Budget | None:
    """The budget ``scope``/``key``/``window`` of ``org`` (None: the scope's default), if set."""
    org = default_org(scope, key) if org is None else org
    row = session.scalars(_one(org, scope, key, window)).first()
    return None if row is None else to_budget(row)


def list_budgets(session: Session, scope: str | None = None, key: str | None = None,
                 org: str | None = None) -> list[Budget]:
    """Every budget (optionally of one scope, key and org), ordered by org, scope, key, window."""
    stmt = select(BudgetRow)
    if scope is not None:
        stmt = stmt.where(BudgetRow.scope == scope)
    if key is not None:
        stmt = stmt.where(BudgetRow.key == key)
    if org is not None:
        stmt = stmt.where(BudgetRow.org == org)
    rows = [to_budget(r) for r in session.scalars(stmt)]
    return sorted(rows, key=lambda b: (b.org != DEPLOYMENT, b.org, SCOPES.index(b.scope), b.key,
                                       WINDOWS.index(b.window)))


def delete_budget(session: Session, scope: str, key: str, window: str,
                  org: str | None = None) -> bool:
    """Remove a budget of ``org`` (None: the scope's default; its pauses and alerts go with
    it); True if it existed."""
    org = default_org(scope, key) if org is None else org
    found = session.scalars(_one(org, scope, key, window).with_only_columns(BudgetRow.id)).first()
    if found is None:
        return False
    session.execute(delete(PauseRow).where(PauseRow.budget_id == found))
    session.execute(delete(AlertRow).where(AlertRow.budget_id == found))
    session.execute(delete(BudgetRow).where(BudgetRow.id == found))
    return True


def open_reservations(session: Session, budget_id: int) -> tuple[int, Decimal]:
    """How many open reservations hold money against ``budget_id``, and their sum."""
    rows = session.execute(select(ReservationRow.amount, ReservationRow.budget_ids)
                           .where(ReservationRow.state == "open")).all()
    mine = [amount for amount, ids in rows if str(budget_id) in ids.split(",")]
    return len(mine), sum(mine, Decimal(0))
