"""Responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}``: text, so only
for features that keep text (models/db/stored_text.py's rule) and only for their retention."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import DateTime, Index, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.stored_text import storable
from models.db.tables import Base


class StoredResponseRow(Base):
    """One kept response: what it answered, what it said, and the conversation so far."""

    __tablename__ = "stored_responses"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    team: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The request id (the response's id without its ``resp_`` prefix).
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Set at write time from the retention then in force (as for stored text).
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: The ``response`` object as it was answered (JSON).
    body: Mapped[str] = mapped_column(Text, nullable=False)
    #: This request's own input items, with ids (JSON array): ``/input_items``.
    input_items: Mapped[str] = mapped_column(Text, nullable=False)
    #: Every item a continuation sends on: earlier turns, this input, this output with its
    #: encrypted reasoning (JSON array).
    context: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (Index("ix_stored_responses_expires_at", "expires_at"),)


@dataclass(frozen=True)
class Kept:
    """A stored response, read back."""

    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    context: list[dict[str, Any]]


def _dumps(value: Any) -> str:
    return storable(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def keep(session: Session, *, org: str, team: str, feature: str, response_id: str,
         body: dict[str, Any], input_items: list[dict[str, Any]],
         context: list[dict[str, Any]], retention_days: int,
         now: datetime | None = None) -> None:
    """Store one response (a rerun of the same id overwrites it). The caller commits."""
    now = now or datetime.now(timezone.utc)
    session.merge(StoredResponseRow(
        org=org, team=team, id=response_id, feature=feature, created_at=now,
        expires_at=now + timedelta(days=retention_days), body=_dumps(body),
        input_items=_dumps(input_items), context=_dumps(context)))


def _live(org: str, team: str, response_id: str, now: datetime) -> Any:
    row = StoredResponseRow
    return select(row).where(row.org == org, row.team == team, row.id == response_id,
                             row.expires_at > now)


def read(session: Session, *, org: str, team: str, response_id: str,
         now: datetime | None = None) -> Kept | None:
    """The response of ``org``/``team`` with this id, unless expired (another team's: None)."""
    row = session.execute(_live(org, team, response_id,
                                now or datetime.now(timezone.utc))).scalar_one_or_none()
    if row is None:
        return None
    return Kept(json.loads(row.body), json.loads(row.input_items), json.loads(row.context))


def forget(session: Session, *, org: str, team: str, response_id: str) -> bool:
    """Delete one response of ``org``/``team``; True when there was one. The caller commits."""
    row = StoredResponseRow
    res = session.execute(delete(row).where(row.org == org, row.team == team,
                                            row.id == response_id))
    return bool(res.rowcount)


def delete_expired(session: Session, now: datetime | None = None) -> int:
    """Delete every response past its expiry; returns how many. The caller commits."""
    now = now or datetime.now(timezone.utc)
    res = session.execute(delete(StoredResponseRow).where(StoredResponseRow.expires_at <= now))
    return int(res.rowcount or 0)
