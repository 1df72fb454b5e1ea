"""Prompt and answer text, kept only for features that opt in, for their retention period."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import DateTime, Index, PrimaryKeyConstraint, String, Text, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import Base
from models.domain.request import ChatRequest
from models.domain.settings import PrivacySettings


class StoredTextRow(Base):
    """The text of one opted-in request; the ledger row of the same id holds only its hash."""

    __tablename__ = "stored_text"

    #: Request ids are the callers', so a row is one org's and team's (as a judgement is):
    #: keyed by the id alone, two tenants' texts of one id collided (migration 0016).
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default",
                                     server_default="default")
    request_id: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Set at write time from the retention then in force, so a later change of the setting
    #: never extends what was promised for rows already kept.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    feature: Mapped[str] = mapped_column(String(64), nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    answer: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("org", "team", "request_id", name="stored_text_pkey"),
        Index("ix_stored_text_expires_at", "expires_at"),
    )


def prompt_text(request: ChatRequest) -> str:
    """The prompt as one readable text: system, few-shot and messages, one per line."""
    parts = [f"system: {request.static.system}"] if request.static.system else []
    parts += [f"{m.role}: {m.content}" for m in (*request.static.few_shot, *request.messages)]
    return "\n".join(parts)


def storable(text: str) -> str:
    """``text`` with each NUL shown as U+FFFD and each lone surrogate as "?": PostgreSQL text
    holds neither, and a refused write here would sink the final ledger write it shares a
    transaction with."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def store_if_opted(session: Session, privacy: PrivacySettings, request: ChatRequest,
                   answer: str, now: datetime | None = None) -> bool:
    """Keep the text of ``request`` when its feature opted in; True when a row was written.

    Idempotent on the org, team and request id (a task that runs twice writes once). The
    caller commits.
    """
    if not privacy.stores_text(request.feature):
        return False
    now = now or datetime.now(timezone.utc)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(StoredTextRow.__table__).values(
        org=request.org, request_id=request.request_id, created_at=now,
        expires_at=now + timedelta(days=privacy.retention_days), team=request.team,
        feature=request.feature, prompt=storable(prompt_text(request)),
        answer=storable(answer),
    ).on_conflict_do_nothing(index_elements=["org", "team", "request_id"]).returning(
        StoredTextRow.request_id)
    # RETURNING, not rowcount: psycopg's rowcount of this INSERT reads -1 (true) either way.
    return session.execute(stmt).first() is not None


def delete_expired(session: Session, now: datetime | None = None) -> int:
    """Delete every text past its expiry; returns how many. The caller commits."""
    now = now or datetime.now(timezone.utc)
    res = session.execute(delete(StoredTextRow).where(StoredTextRow.expires_at <= now))
    return int(res.rowcount or 0)
