"""API keys of the HTTP front door: the table, salted hashing, and the repository functions.

A key reads ``sk-sluice-<id>-<secret>``. Only ``id`` is stored in clear (it finds the row); the
secret is stored as HMAC-SHA256 under a random per-key salt, so a leaked table yields no key.
A key bills one org and team, and may be bound to the features and users it can bill, so a
request header cannot move its spend under another feature's or user's cap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Index, String, Text, select, update
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
    #: The feature a request bills when it names none.
    feature: Mapped[str] = mapped_column(String(64), nullable=False, default="default",
                                         server_default="default")
    #: The other features it may bill, comma-separated; NULL: any feature (an unbound key).
    features: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The users it may bill, comma-separated; NULL: any user.
    users: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: An operator key that acts in every org (minted so explicitly); others act in their own.
    all_orgs: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                           server_default="0")
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
    #: The feature billed when a request names none.
    feature: str = "default"
    #: Every feature it may bill (the default one included); None: any.
    features: tuple[str, ...] | None = None
    #: The users it may bill; None: any.
    users: tuple[str, ...] | None = None
    #: An operator key acting in every org.
    all_orgs: bool = False

    @property
    def is_operator(self) -> bool:
        """Whether this key may call the operator endpoints."""
        return self.role == "operator"

    def may_bill_feature(self, feature: str) -> bool:
        """Whether a request of this key may be billed to ``feature``."""
        return self.features is None or feature in self.features

    def may_bill_user(self, user: str) -> bool:
        """Whether a request of this key may be billed to ``user``."""
        return self.users is None or user in self.users

    def acts_in(self, org: str) -> bool:
        """Whether this (operator) key may act on ``org``'s keys and jobs."""
        return self.all_orgs or org == self.org


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n for n in text.split(",") if n)


def info_of(row: ApiKeyRow) -> KeyInfo:
    """The KeyInfo of a row."""
    others = _names(row.features)
    features = None if others is None else tuple(dict.fromkeys((row.feature, *others)))
    return KeyInfo(row.id, row.org, row.team, row.role, row.name, feature=row.feature,
                   features=features, users=_names(row.users), all_orgs=bool(row.all_orgs))


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
               name: str = "", feature: str | None = None,
               allow_features: Sequence[str] = (), allow_users: Sequence[str] | None = None,
               all_orgs: bool = False, now: datetime | None = None) -> tuple[str, KeyInfo]:
    """Mint a key; returns the full key (shown once, never stored) and its info. Caller commits.

    With ``feature`` the key bills that feature by default and may bill only it and
    ``allow_features``; without, it bills ``default`` unless a request names any other.
    ``allow_users`` (None: any) are the only users its requests may name.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if all_orgs and role != "operator":
        raise ValueError("only an operator key can act in every org")
    if feature is None and allow_features:
        raise ValueError("name the key's default feature (--feature) to bind it to features")
    key_id = secrets.token_hex(ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = ApiKeyRow(id=key_id, org=org, team=team, role=role, name=name[:100], salt=salt,
                    digest=digest_of(salt, secret), feature=feature or "default",
                    features=None if feature is None else ",".join(allow_features),
                    users=None if allow_users is None else ",".join(allow_users),
                    all_orgs=all_orgs, created_at=now or datetime.now(timezone.utc))
    session.add(row)
    session.flush()
    return f"{PREFIX}{key_id}-{secret}", info_of(row)


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
    return info_of(row)


def revoke_key(session: Session, key_id: str, now: datetime | None = None, *,
               org: str | None = None) -> bool:
    """Revoke ``key_id`` (only if it is of ``org``, when given); True if it was live. Caller
    commits."""
    stmt = (update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(timezone.utc)))
    if org is not None:
        stmt = stmt.where(ApiKeyRow.org == org)
    return bool(session.execute(stmt).rowcount)


def list_keys(session: Session, team: str | None = None, *,
              org: str | None = None) -> list[ApiKeyRow]:
    """Every key (optionally of one team, of one org), newest first; rows carry no secret."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc())
    if team is not None:
        stmt = stmt.where(ApiKeyRow.team == team)
    if org is not None:
        stmt = stmt.where(ApiKeyRow.org == org)
    return list(session.scalars(stmt))
