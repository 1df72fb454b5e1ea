"""The operator audit trail: who changed behaviour (pause, budget, flush, keys), when, why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import Base
from models.domain.errors import LedgerError

#: Actions the CLI records; a free string in the table so a new command needs no migration.
ACTIONS = ("queues.pause", "queues.resume", "budget.set", "budget.rm", "cache.flush",
           "keys.create", "keys.revoke", "keys.update", "keys.rotate", "limits.set",
           "limits.rm", "ladders.set", "ladders.rm")


class AuditRow(Base):
    """One operator action. Append-only: nothing in sluicegate updates or deletes these rows."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: The OS user running the CLI, or what ``--actor`` named.
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    #: What it acted on: queue names, a budget name, a cache scope, a key id.
    target: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    #: JSON of the parameters (never a secret: callers pass ids, not keys).
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="{}")

    __table_args__ = (Index("ix_audit_log_at", "at"),)


@dataclass(frozen=True)
class AuditEntry:
    """An audit row as plain values."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (``at`` as ISO 8601 UTC)."""
        return {"id": self.id, "at": _aware(self.at).isoformat(), "actor": self.actor,
                "action": self.action, "target": self.target, "reason": self.reason,
                "detail": self.detail}


def record_action(session: Session, *, actor: str, action: str, target: str = "",
                  reason: str = "", detail: dict[str, Any] | None = None,
                  now: datetime | None = None) -> int:
    """Append one action; returns its id. The caller commits."""
    row = AuditRow(at=now or datetime.now(timezone.utc), actor=actor[:128], action=action[:64],
                   target=target[:256], reason=reason[:500],
                   detail=json.dumps(detail or {}, sort_keys=True, default=str))
    try:
        session.add(row)
        session.flush()
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not write the audit row for {action}: {exc}; run "
                          "`sluice migrate` so the audit_log table exists") from exc
    return int(row.id)


def list_actions(session: Session, *, since: datetime | None = None, action: str | None = None,
                 limit: int = 1000) -> list[AuditEntry]:
    """Actions, oldest first, optionally since a time and of one action kind."""
    stmt = select(AuditRow)
    if since is not None:
        stmt = stmt.where(AuditRow.at >= since)
    if action is not None:
        stmt = stmt.where(AuditRow.action == action)
    # Newest ``limit`` rows, then shown in time order.
    rows = list(session.scalars(stmt.order_by(AuditRow.id.desc()).limit(limit)))
    return [AuditEntry(r.id, _aware(r.at), r.actor, r.action, r.target, r.reason,
                       json.loads(r.detail or "{}")) for r in reversed(rows)]


def _aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
