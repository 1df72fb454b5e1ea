"""API keys of the HTTP front door: the table, salted hashing, and the repository functions.

A key reads ``sk-sluice-<id>-<secret>``. Only ``id`` is stored in clear (it finds the row); the
secret is stored as HMAC-SHA256 under a random per-key salt, so a leaked table yields no key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import DateTime, Index, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import Base

PREFIX = "sk-sluice-"
ID_LENGTH = 12
ROLES: tuple[str, ...] = ("team", "operator")


class ApiKeyRow(Base):
    """One API key: who it bills (org, team), what it may do (role), and its salted hash."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    org: Mapped[str] = mapped_column(String(64), nullable=False, default="default")
    team: Mapped[str] = mapped_column(String(64), nullable=False)
    #: ``team`` keys call the model endpoints; ``operator`` keys may also call ``/admin``.
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="team")
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    salt: Mapped[str] = mapped_column(String(32), nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_api_keys_team", "team"),)


@dataclass(frozen=True)
class KeyInfo:
    """What a verified key stands for (never its secret)."""

    id: str
    org: str
    team: str
    role: str
    name: str = ""

    @property
    def is_operator(self) -> bool:
        """Whether this key may call the operator endpoints."""
        return self.role == "operator"


def digest_of(salt_hex: str, secret: str) -> str:
    """HMAC-SHA256 of ``secret`` keyed by the per-key salt, hex."""
    return hmac.new(bytes.fromhex(salt_hex), secret.encode(), hashlib.sha256).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not token.startswith(PREFIX):
        return None
    rest = token[len(PREFIX):]
    key_id, dash, secret = rest[:ID_LENGTH], rest[ID_LENGTH:ID_LENGTH + 1], rest[ID_LENGTH + 1:]
    if dash != "-" or len(key_id) != ID_LENGTH or not secret or len(secret) > 200:
        return None
    return key_id, secret


def create_key(session: Session, *, team: str, org: str = "default", role: str = "team",
               name: str = "", now: datetime | None = None) -> tuple[str, KeyInfo]:
    """Mint a key; returns the full key (shown once, never stored) and its info. Caller commits."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    key_id = secrets.token_hex(ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    session.add(ApiKeyRow(id=key_id, org=org, team=team, role=role, name=name[:100], salt=salt,
                          digest=digest_of(salt, secret),
                          created_at=now or datetime.now(timezone.utc)))
    session.flush()
    return f"{PREFIX}{key_id}-{secret}", KeyInfo(key_id, org, team, role, name[:100])


def verify_key(session: Session, token: str) -> KeyInfo | None:
    """The info of ``token`` when it is a live key, else None (unknown, wrong secret, revoked)."""
    parts = split_key(token)
    if parts is None:
        return None
    key_id, secret = parts
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None:
        return None
    # compare_digest: the time taken must not tell how much of the digest matched.
    if not hmac.compare_digest(row.digest, digest_of(row.salt, secret)):
        return None
    return KeyInfo(row.id, row.org, row.team, row.role, row.name)


def revoke_key(session: Session, key_id: str, now: datetime | None = None) -> bool:
    """Revoke ``key_id``; True if it was live. Caller commits."""
    stmt = (update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(timezone.utc)))
    return bool(session.execute(stmt).rowcount)


def list_keys(session: Session, team: str | None = None) -> list[ApiKeyRow]:
    """Every key (optionally of one team), newest first; rows carry no secret."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc())
    if team is not None:
        stmt = stmt.where(ApiKeyRow.team == team)
    return list(session.scalars(stmt))
