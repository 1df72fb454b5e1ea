"""Rate limits set by operators (org, team, feature, model, deployment): the table and its
repository functions. A key's own limits live on its row (``models/db/api_keys.py``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import Base
from models.domain.ratelimit import RateLimit, check_limit


class RateLimitRow(Base):
    """One limit: at most ``rpm`` requests and ``tpm`` tokens per ``window_s`` on a scope."""

    __tablename__ = "rate_limits"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    #: The org it applies in; ``*``: every org (a provider deployment's own limit).
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    key: Mapped[str] = mapped_column(String(200), nullable=False)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    window_s: Mapped[int] = mapped_column(Integer, nullable=False, default=60)

    __table_args__ = (Index("ux_rate_limits_scope", "org", "scope", "key", "window_s",
                            unique=True),)


def to_limit(row: RateLimitRow) -> RateLimit:
    """The domain value of a row."""
    return RateLimit(row.scope, row.key, row.org, row.rpm, row.tpm, row.window_s)


def set_limit(session: Session, limit: RateLimit) -> RateLimit:
    """Create or replace the limit of (org, scope, key, window). Caller commits."""
    check_limit(limit)
    row = session.scalars(select(RateLimitRow).where(
        RateLimitRow.org == limit.org, RateLimitRow.scope == limit.scope,
        RateLimitRow.key == limit.key, RateLimitRow.window_s == limit.window_s)).first()
    if row is None:
        row = RateLimitRow(org=limit.org, scope=limit.scope, key=limit.key,
                           window_s=limit.window_s)
        session.add(row)
    row.rpm, row.tpm = limit.rpm, limit.tpm
    session.flush()
    return to_limit(row)


def remove_limit(session: Session, org: str, scope: str, key: str) -> int:
    """Delete every window of the limit on (org, scope, key); how many. Caller commits."""
    return int(session.execute(delete(RateLimitRow).where(
        RateLimitRow.org == org, RateLimitRow.scope == scope, RateLimitRow.key == key)
    ).rowcount)


def list_limits(session: Session, org: str | None = None) -> list[RateLimit]:
    """Every limit (of ``org`` and every org's, when given), by scope and key."""
    stmt = select(RateLimitRow).order_by(RateLimitRow.org, RateLimitRow.scope, RateLimitRow.key)
    if org is not None:
        stmt = stmt.where(RateLimitRow.org.in_((org, "*")))
    return [to_limit(r) for r in session.scalars(stmt)]
