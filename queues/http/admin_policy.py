"""The policy fields of ``POST /admin/keys`` (allow-list, lanes, limits, expiry, metadata,
budget), and what a team admin key may mint: keys of its own team, within the team's limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from models.db.api_keys import KeyInfo
from models.db.key_policy import KeyBudget, check_within_team
from models.domain.errors import ValidationError
from queues.http.auth import AuthError

POLICY_FIELDS = {"models", "lanes", "rpm", "tpm", "expires_in_s", "metadata", "budget"}


def _count(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**12:
        raise ValidationError(f"{field} must be a whole number of at least 1", field=field)
    return value


def _list(body: dict[str, Any], field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > 64 or not all(
            isinstance(v, str) and 0 < len(v) <= 128 for v in value):
        raise ValidationError(f"{field} must be a non-empty list of names", field=field)
    return value


def _budget(body: dict[str, Any]) -> KeyBudget | None:
    value = body.get("budget")
    if value is None:
        return None
    try:
        hard = Decimal(str(value["hard"]))
        soft = None if value.get("soft") is None else Decimal(str(value["soft"]))
        window = str(value.get("window", "daily"))
    except (KeyError, TypeError, AttributeError, InvalidOperation):
        raise ValidationError('budget is {"hard": USD, "soft"?: USD, "window"?: "daily"}',
                              field="budget") from None
    if hard <= 0 or (soft is not None and soft <= 0):
        raise ValidationError("budget amounts must be more than 0", field="budget")
    return KeyBudget(hard, soft, window)


def read_policy(body: dict[str, Any], now: datetime | None = None
                ) -> tuple[dict[str, Any], KeyBudget | None]:
    """``apply_policy`` keyword arguments and the key's own budget, from a request body."""
    policy: dict[str, Any] = {}
    for field in ("models", "lanes"):
        if body.get(field) is not None:
            policy[field] = _list(body, field)
    for field in ("rpm", "tpm"):
        if body.get(field) is not None:
            policy[field] = _count(body, field)
    expires = _count(body, "expires_in_s")
    if expires is not None:
        policy["expires_at"] = (now or datetime.now(timezone.utc)) + timedelta(seconds=expires)
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or len(meta) > 32 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 256
                for k, v in meta.items()):
            raise ValidationError("metadata is an object of at most 32 string labels",
                                  field="metadata")
        policy["metadata"] = meta
    return policy, _budget(body)


def admin_scope(me: KeyInfo, team: str, org: str, role: str, all_orgs: bool) -> None:
    """A team admin acts on its own team, minting team keys only (403 otherwise)."""
    if me.role != "admin":
        return
    if team != me.team or org != me.org:
        raise AuthError(f"this team admin key acts for team {me.org}/{me.team} only; another "
                        "team's keys need that team's admin or an operator", status=403,
                        code="team_not_allowed", param="team")
    if role != "team" or all_orgs:
        raise AuthError("a team admin mints team keys only (role 'team')", status=403,
                        code="role_not_allowed", param="role")


def check_admin_limits(session: Any, me: KeyInfo, policy: dict[str, Any],
                       budget: KeyBudget | None) -> None:
    """A team admin's key stays within the team's rate limits and budget, and its own."""
    if me.role != "admin":
        return
    rpm, tpm = policy.get("rpm"), policy.get("tpm")
    for what, mine, cap in (("rpm", rpm, me.rpm), ("tpm", tpm, me.tpm)):
        if cap is not None and (mine is None or mine > cap):
            raise AuthError(f"this admin key's own {what} is {cap}: the keys it mints must set "
                            f"{what} of at most {cap}", status=403, code="over_team_limits",
                            param=what)
    check_within_team(session, me.org, me.team, rpm=rpm, tpm=tpm, budget=budget)
