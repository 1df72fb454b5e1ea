"""Storage calls of dead workers: a Gemini cache created or renewed, its storage row never written.

A worker holds a storage period's cost, writes the call as a ``sent`` attempt, calls the
provider, then writes the storage row and settles. Killed after the call left, it leaves the
attempt ``sent`` and the reservation open for ever (the governor keeps a reservation whose
attempt is unsettled), and no row, while the provider bills the cache: created, nobody knows
its name to delete it, so it lives the whole period. Each hold is therefore noted in Redis
until its call ends; the context-cache sweep charges those older than any call can live (twice
the SDK timeout) at the hold, estimated: a storage row, the attempt ended, the reservation
settled, in one transaction.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from models.db import attempts, ledger
from models.db.attempts import AttemptRow
from models.db.budgets import ReservationRow
from models.domain.settings import Settings
from workers.context_cache import STORAGE, open_holds
from workers.runtime import WorkerRuntime

log = logging.getLogger("sluice.context_cache")


class OpenHolds:
    """Storage holds whose provider call has not ended, in a Redis sorted set (by start)."""

    def __init__(self, client: Any, key_prefix: str = "") -> None:
        self.client = client
        self.key = f"{key_prefix}gcache:holds"

    def add(self, row_id: str) -> None:
        if self.client is None:
            return
        try:
            self.client.zadd(self.key, {row_id: time.time()})
        except Exception as exc:  # noqa: BLE001 - the call still goes on; only a crash needs it
            log.warning("could not note the storage hold %s: %s", row_id, exc)

    def done(self, row_id: str) -> None:
        if self.client is None:
            return
        try:
            self.client.zrem(self.key, row_id)
        except Exception as exc:  # noqa: BLE001 - the sweep finds its attempt ended
            log.debug("could not forget the storage hold %s: %s", row_id, exc)

    def older_than(self, cutoff: float) -> list[str]:
        if self.client is None:
            return []
        raw = self.client.zrangebyscore(self.key, "-inf", cutoff)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]


def orphan_after_s(settings: Settings) -> float:
    """A storage call still ``sent`` after this long has no live worker: its SDK would have
    given up (and its worker ended the attempt) long before."""
    return 2 * settings.providers.timeout_s


def settle_orphans(rt: WorkerRuntime) -> int:
    """Charge every storage hold of a dead worker (see the module); how many."""
    holds = open_holds(rt)
    settled = 0
    try:
        found = holds.older_than(time.time() - orphan_after_s(rt.settings))
    except Exception as exc:  # noqa: BLE001 - the next sweep tries again
        log.warning("could not read the storage holds: %s", exc)
        return 0
    for row_id in found:
        try:
            if settle_orphan(rt, row_id):
                settled += 1
                log.warning("storage call %s: its worker died mid-call; charged the whole "
                            "period (estimated)", row_id)
        except SQLAlchemyError as exc:
            log.warning("could not settle the storage call %s (next sweep): %s", row_id, exc)
            continue
        holds.done(row_id)
    return settled


def settle_orphan(rt: WorkerRuntime, row_id: str) -> bool:
    """Charge the ``sent`` storage attempt ``row_id`` at its worst case (the hold) with its
    storage row and settlement; False when it had ended meanwhile."""
    with rt.session() as s:
        found = s.scalars(select(AttemptRow).where(AttemptRow.request_id == row_id,
                                                   AttemptRow.outcome == "sent")).first()
        if found is None or not attempts.charge_lost(s, row_id):
            return False
        attempts.settle_all(s, row_id)
        held = s.scalars(select(ReservationRow)
                         .where(ReservationRow.request_id == row_id)).first()
        lane = held.queue.split(".")[0] if held is not None and held.queue else "interactive"
        amount = Decimal(found.worst_case)
        ledger.record(s, orphan_row(rt, found, lane, amount))
        if rt.admission is None:
            return True
        scope = SimpleNamespace(org=found.org, lane=lane, team=found.team,
                                feature=found.feature, user=None, request_id=row_id)
        if held is not None and held.state in ("open", "expired"):
            rt.admission.settle(held.id, amount, session=s, request=scope)
        elif amount:
            rt.admission.charge(scope, amount, session=s)  # type: ignore[arg-type]
    return True


def orphan_row(rt: WorkerRuntime, attempt: AttemptRow, lane: str, amount: Decimal
               ) -> dict[str, Any]:
    """The storage row of a dead worker's storage call, charged ``amount`` (estimated)."""
    m = rt.catalogue.get(attempt.model)
    kind = attempt.kind.removeprefix("cache_")
    return {"request_id": attempt.request_id, "created_at": datetime.now(timezone.utc),
            "org": attempt.org, "team": attempt.team, "feature": attempt.feature,
            "user": None, "lane": lane, "tier": m.tier, "provider": m.provider,
            "model": m.name, "backend": "api",
            "route_reason": f"{kind}: the worker died before the provider answered; the "
                            "whole period charged (estimated)",
            "outcome": STORAGE, "input_uncached": 0, "cost": amount, "estimated_cost": amount,
            "baseline_cost": Decimal(0), "list_cost": Decimal(0),
            "price_version": rt.catalogue.version, "prompt_hash": "", "attempts": 1}
