"""A key's policy beyond its row: its own budget, the team limits a team admin mints within,
and the description ``sluice keys show`` and the audit log use."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models.db.api_keys import KeyInfo
from models.db.budgets import get_budget, list_budgets, set_budget
from models.db.rate_limits import list_limits
from models.domain.errors import NotAllowed


@dataclass(frozen=True)
class KeyBudget:
    """The key's own budget in one window (``hourly``, ``daily``, ``monthly``, ``total``)."""

    hard: Decimal
    soft: Decimal | None = None
    window: str = "daily"


def set_key_budget(session: Session, info: KeyInfo, budget: KeyBudget) -> None:
    """Create or change the key's own budget (scope ``key``, in the key's org). Caller commits."""
    set_budget(session, "key", info.id, budget.window, hard=budget.hard, soft=budget.soft,
               org=info.org)


def team_limits(session: Session, org: str, team: str) -> tuple[int | None, int | None]:
    """The team's tightest requests and tokens per minute limits (None: none set)."""
    rpm = tpm = None
    for lim in list_limits(session, org):
        if lim.scope == "team" and lim.key == team and lim.org == org:
            per_min = 60 / lim.window_s
            if lim.rpm is not None:
                rpm = min(rpm or lim.rpm, int(lim.rpm * per_min))
            if lim.tpm is not None:
                tpm = min(tpm or lim.tpm, int(lim.tpm * per_min))
    return rpm, tpm


def check_within_team(session: Session, org: str, team: str, *, rpm: int | None,
                      tpm: int | None, budget: KeyBudget | None) -> None:
    """A team admin mints keys within its team's limits: a key's rate limits no higher than
    the team's, its budget no larger than the team's budget of that window (NotAllowed)."""
    team_rpm, team_tpm = team_limits(session, org, team)
    for what, mine, cap in (("rpm", rpm, team_rpm), ("tpm", tpm, team_tpm)):
        if cap is not None and (mine is None or mine > cap):
            raise NotAllowed(f"team {team} is limited to {cap} {what} a minute: a key its admin "
                             f"mints must set {what} of at most {cap}", field=what)
    if budget is not None:
        cap_b = get_budget(session, "team", team, budget.window, org=org)
        if cap_b is not None and budget.hard > cap_b.hard_limit:
            raise NotAllowed(f"team {team}'s {budget.window} budget is {cap_b.hard_limit} USD: "
                             "a key its admin mints may not have a larger one", field="budget")


def policy_json(info: KeyInfo) -> dict[str, Any]:
    """The key's policy as JSON (never its secret): the audit detail and ``keys show``."""
    return {"id": info.id, "org": info.org, "team": info.team, "role": info.role,
            "name": info.name, "feature": info.feature,
            "features": list(info.features) if info.features is not None else None,
            "users": list(info.users) if info.users is not None else None,
            "models": list(info.models) if info.models is not None else None,
            "lanes": list(info.lanes) if info.lanes is not None else None,
            "rpm": info.rpm, "tpm": info.tpm,
            "expires_at": info.expires_at.isoformat() if info.expires_at else None,
            "metadata": dict(info.metadata), "all_orgs": info.all_orgs}


def key_budgets(session: Session, info: KeyInfo) -> list[dict[str, Any]]:
    """The key's own budgets, with what is spent and held."""
    return [{"window": b.window, "hard": str(b.hard_limit),
             "soft": None if b.soft_limit is None else str(b.soft_limit),
             "spent": str(b.spent), "reserved": str(b.reserved)}
            for b in list_budgets(session, "key", info.id, org=info.org)]
