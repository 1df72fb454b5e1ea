"""API keys of the HTTP front door: the table, salted hashing, and the repository functions.

A key reads ``sk-sluice-<id>-<secret>``. Only ``id`` is stored in clear (it finds the row); the
secret is stored as HMAC-SHA256 under a random per-key salt, so a leaked table yields no key.
A key bills one org and team, and may be bound to the features and users it can bill, so a
request header cannot move its spend under another feature's or user's cap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db.tables import Base

PREFIX = "sk-sluice-"
ID_LENGTH = 12
#: ``admin``: a team admin, minting and managing keys of its own team only.
ROLES: tuple[str, ...] = ("team", "admin", "operator")


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
    #: After this the key is refused (also the end of a rotated key's grace period).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Models and tiers it may use, comma-separated; NULL: any.
    models: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Lanes it may use, comma-separated; NULL: any.
    lanes: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Its own rate limits per ``window_s`` (NULL: none of that kind).
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: The caller's own labels (JSON object of strings), shown by ``sluice keys show``.
    meta: Mapped[str] = mapped_column(Text, nullable=False, default="{}", server_default="{}")
    #: The secret before the last ``sluice keys rotate``, valid until ``prev_until``: the id,
    #: and so its budget, limits and metrics, stay the same across a rotation.
    prev_salt: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prev_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

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
    #: When it stops working (None: never).
    expires_at: datetime | None = None
    #: Models and tiers it may use (None: any).
    models: tuple[str, ...] | None = None
    #: Lanes it may use (None: any).
    lanes: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the key is past its expiry (a rotated key past its grace period)."""
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(
            timezone.utc))

    def may_use_lane(self, lane: str) -> bool:
        """Whether a request of this key may run on ``lane``."""
        return self.lanes is None or lane in self.lanes

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
    meta = json.loads(row.meta or "{}")
    return KeyInfo(row.id, row.org, row.team, row.role, row.name, feature=row.feature,
                   features=features, users=_names(row.users), all_orgs=bool(row.all_orgs),
                   expires_at=_aware(row.expires_at), models=_names(row.models),
                   lanes=_names(row.lanes), rpm=row.rpm, tpm=row.tpm,
                   metadata=tuple(sorted((str(k), str(v)) for k, v in meta.items())))


def _aware(at: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive; every one stored is UTC.
    return at if at is None or at.tzinfo else at.replace(tzinfo=timezone.utc)


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
               all_orgs: bool = False, now: datetime | None = None,
               **policy: Any) -> tuple[str, KeyInfo]:
    """Mint a key; returns the full key (shown once, never stored) and its info. Caller commits.

    With ``feature`` the key bills that feature by default and may bill only it and
    ``allow_features``; without, it bills ``default`` unless a request names any other.
    ``allow_users`` (None: any) are the only users its requests may name. ``policy`` sets
    what :func:`apply_policy` takes (models, lanes, rpm, tpm, expires_at, metadata).
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
                    all_orgs=all_orgs, created_at=now or datetime.now(timezone.utc),
                    meta="{}")
    apply_policy(row, **policy)
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
    expires = _aware(row.expires_at)
    if expires is not None and expires <= datetime.now(timezone.utc):
        return None
    # compare_digest: the time taken must not tell how much of the digest matched.
    if hmac.compare_digest(row.digest, digest_of(row.salt, secret)):
        return info_of(row)
    until = _aware(row.prev_until)
    if row.prev_salt and row.prev_digest and until is not None \
            and until > datetime.now(timezone.utc) \
            and hmac.compare_digest(row.prev_digest, digest_of(row.prev_salt, secret)):
        # The secret before a rotation, in its grace period: it stops when the grace ends.
        info = info_of(row)
        ends = until if info.expires_at is None else min(until, info.expires_at)
        return dataclasses.replace(info, expires_at=ends)
    return None


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


#: Marks a policy field :func:`apply_policy` leaves as it is.
KEEP: Any = object()
LANES: tuple[str, ...] = ("interactive", "async")


def apply_policy(row: ApiKeyRow, *, models: Sequence[str] | None = KEEP,
                 lanes: Sequence[str] | None = KEEP, rpm: int | None = KEEP,
                 tpm: int | None = KEEP, expires_at: datetime | None = KEEP,
                 metadata: dict[str, str] | None = KEEP) -> None:
    """Set the policy fields given (None clears one: any model, any lane, no limit, no expiry)."""
    if models is not KEEP:
        if models is not None and not models:
            raise ValueError("an allow-list names at least one model or tier")
        row.models = None if models is None else ",".join(dict.fromkeys(models))
    if lanes is not KEEP:
        bad = [x for x in lanes or () if x not in LANES]
        if bad:
            raise ValueError(f"unknown lane {bad[0]!r}; use {', '.join(LANES)}")
        row.lanes = None if lanes is None else ",".join(dict.fromkeys(lanes))
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not KEEP:
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
            setattr(row, name, value)
    if expires_at is not KEEP:
        row.expires_at = expires_at
    if metadata is not KEEP:
        row.meta = json.dumps(metadata or {}, sort_keys=True)


def update_key(session: Session, key_id: str, *, org: str | None = None,
               team: str | None = None, **policy: Any) -> KeyInfo | None:
    """Change a live key's policy (of ``org``/``team`` only, when given); its new info, or None
    when there is no such live key. Caller commits."""
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None or (org is not None and row.org != org) \
            or (team is not None and row.team != team):
        return None
    apply_policy(row, **policy)
    session.flush()
    return info_of(row)


def rotate_key(session: Session, key_id: str, *, grace: timedelta, org: str | None = None,
               team: str | None = None, now: datetime | None = None
               ) -> tuple[str, KeyInfo] | None:
    """Give ``key_id`` a new secret; the old one keeps working for ``grace`` (then only the new
    one does). The id stays, so the key's budget, limits and metrics go on. The new full key
    and its info, or None when no live key matched. Caller commits."""
    now = now or datetime.now(timezone.utc)
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None or (org is not None and row.org != org) \
            or (team is not None and row.team != team) or info_of(row).expired(now):
        return None
    secret = secrets.token_urlsafe(32)
    row.prev_salt, row.prev_digest, row.prev_until = row.salt, row.digest, now + grace
    row.salt = secrets.token_hex(16)
    row.digest = digest_of(row.salt, secret)
    session.flush()
    return f"{PREFIX}{row.id}-{secret}", info_of(row)
