"""Alerts at budget limits: a hard-limit alert (and a lane budget's pause) once per window, and
a soft-limit alert once per window."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from models.domain.budget import Budget, pause_queues
from scheduler import alerts, governor
from scheduler.governor import SqlPauseBook

log = logging.getLogger("sluice.admission")

#: Opens a transaction for ``doing`` (admission's ``_tx`` without a session).
Tx = Callable[[str], AbstractContextManager[Session]]


class LimitAlerts:
    """Remembers which windows were already alerted, so a busy refusal path writes once."""

    def __init__(self, tx: Tx, clock: Callable[[], datetime],
                 pauses: SqlPauseBook | None) -> None:
        self.tx = tx
        self.clock = clock
        self.pauses = pauses
        self._hard_seen: set[tuple[int, datetime, Decimal]] = set()
        self._soft_seen: set[tuple[int, datetime]] = set()

    def refused(self, budget: Budget, amount: Decimal) -> None:
        """A hard-limit alert once per window, and for a deployment-wide lane budget, the queue
        pause (an org's own budget never pauses the queues every org shares)."""
        log.info("refused %s: needs %s, room %s", budget.name, amount, budget.room)
        key = (budget.id, budget.window_start, budget.hard_limit)
        pausing = budget.pauses
        if key in self._hard_seen and not (pausing and self._pause_missing(budget)):
            return
        try:
            with self.tx("record the hard limit") as s:
                alerts.record_alert(s, budget, "hard", self.clock())
                if pausing:
                    governor.record_budget_pause(s, budget, self.clock())
        except Exception as exc:  # noqa: BLE001 - the refusal itself must still reach the caller
            log.error("could not record the hard limit of %s: %s", budget.name, exc)
            return
        self._hard_seen.add(key)
        if self.pauses is not None:
            self.pauses.invalidate()

    def soft(self, s: Session, budgets: list[Budget], now: datetime) -> None:
        """A soft-limit alert for each budget past its soft limit, once per window."""
        for b in budgets:
            if b.soft_reached() and (b.id, b.window_start) not in self._soft_seen:
                alerts.record_alert(s, b, "soft", now)
                self._soft_seen.add((b.id, b.window_start))

    def _pause_missing(self, budget: Budget) -> bool:
        if self.pauses is None:
            return True
        try:
            return any(self.pauses.paused(q) is None for q in pause_queues(budget))
        except Exception:  # noqa: BLE001 - unknown: try to record it again
            return True
