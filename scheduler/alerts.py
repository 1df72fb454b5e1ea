"""Budget alerts: a log line and a stored row once per budget, window and kind; webhooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.db.budgets import AlertRow, BudgetRow, aware, insert_ignore, to_budget
from models.domain.budget import Budget, plain, usd

log = logging.getLogger("sluice.governor")


def record_alert(session: Session, budget: Budget, kind: str, now: datetime) -> bool:
    """Log and store a ``soft`` or ``hard`` alert once per budget and window; True if new."""
    limit = budget.soft_limit if kind == "soft" else budget.hard_limit
    what = "soft threshold" if kind == "soft" else "hard limit"
    message = (f"budget {budget.name} reached its {what} {usd(limit)}: spent "
               f"{usd(budget.spent)}, reserved {usd(budget.reserved)} this window")
    new = insert_ignore(session, AlertRow.__table__,
                        {"budget_id": budget.id, "window_start": budget.window_start,
                         "kind": kind, "message": message, "created_at": now, "attempts": 0},
                        ["budget_id", "window_start", "kind"])
    if new:
        log.warning("budget alert: %s", message)
    return new


def soft_alerts(session: Session, now: datetime) -> int:
    """Alert every budget at its soft threshold that has no alert this window yet."""
    rows = session.scalars(select(BudgetRow).where(BudgetRow.soft_limit.is_not(None),
                                                   BudgetRow.spent >= BudgetRow.soft_limit))
    return sum(record_alert(session, to_budget(r), "soft", now) for r in rows)


def deliver_alerts(session: Session, post: Callable[[str, dict[str, Any]], Any],
                   now: datetime, *, max_attempts: int = 5) -> int:
    """POST undelivered alerts to their budget's webhook; the caller commits."""
    rows = session.execute(select(AlertRow, BudgetRow).join(BudgetRow,
                                                          AlertRow.budget_id == BudgetRow.id)
                           .where(AlertRow.delivered_at.is_(None),
                                  BudgetRow.webhook_url.is_not(None),
                                  AlertRow.attempts < max_attempts)).all()
    sent = 0
    for alert, budget in rows:
        # "org" added for tenancy: team "catalog" of two orgs is two budgets of one name.
        payload = {"budget": f"{budget.scope}:{budget.key}:{budget.window}", "org": budget.org,
                   "kind": alert.kind,
                   "message": alert.message, "spent": plain(budget.spent),
                   "hard_limit": plain(budget.hard_limit),
                   "soft_limit": None if budget.soft_limit is None else plain(budget.soft_limit),
                   "window_start": aware(alert.window_start).isoformat()}
        alert.attempts += 1
        try:
            post(str(budget.webhook_url), payload)
        except Exception as exc:  # noqa: BLE001 - a webhook outage must not stop the governor
            log.warning("alert webhook %s failed (attempt %d): %s", budget.webhook_url,
                        alert.attempts, exc)
            continue
        alert.delivered_at = now
        sent += 1
    return sent


def post_json(url: str, payload: dict[str, Any]) -> None:
    """POST ``payload`` as JSON with a short timeout; raises on a non-2xx answer."""
    import httpx

    httpx.post(url, json=payload, timeout=3.0).raise_for_status()
