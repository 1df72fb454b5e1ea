"""Explicit context caches in a worker: the decision before a Gemini call, storage on the ledger.

Storage goes through the same money path as a request: its cost is reserved on the owning
feature's budgets before the provider call that commits it (a cache created or renewed), the
call is an attempt row written before it is sent, and the storage period is a ledger row of its
own (``outcome = cache_storage``, attributed to the owning org, team and feature), written with
the attempt's end and the reservation's settlement in one transaction. A cache deleted early
is credited the storage it did not use (a negative row: the provider stops billing then).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from models.db import attempts, ledger
from models.domain.catalogue import ModelSpec
from models.domain.result import Route
from queues.envelope import Envelope
from workers.providers.base import ProviderReply
from workers.providers.gemini_cache import ExplicitCaches, Period, storage_amount
from workers.runtime import WorkerRuntime

log = logging.getLogger("sluice.context_cache")
#: The ledger outcome of a storage row.
STORAGE = "cache_storage"


@dataclass
class Hold:
    """What ``hold`` took: the reservation, the attempt row, the storage row's id."""

    row_id: str
    amount: Decimal
    reservation_id: str | None = None
    attempt_id: int | None = None


def _scope(period: Period, row_id: str) -> Any:
    # Storage belongs to the feature that owns the prefix, not to the user who triggered it.
    # The reservation names the storage row, as a request's names the request: the governor
    # keeps it while that row's attempt is unsettled.
    o = period.owner
    return SimpleNamespace(org=o["org"], lane=o["lane"], team=o["team"], feature=o["feature"],
                           user=None, request_id=row_id)


def _route(period: Period) -> Route:
    m = period.model
    return Route(tier=m.tier, model=m.name, provider=m.provider, backend="api",
                 lane=period.owner["lane"], reason="explicit context-cache storage")


class LedgerBooks:
    """:class:`workers.providers.gemini_cache.Books` on the ledger and the budgets."""

    def __init__(self, rt: WorkerRuntime) -> None:
        self.rt = rt

    def hold(self, period: Period) -> Hold:
        """Reserve the period's cost (BudgetExceeded when a budget lacks it), then write the
        provider call as a ``sent`` attempt, before it is made."""
        rt, amount = self.rt, storage_amount(period)
        hold = Hold(row_id=f"gcache-{uuid.uuid4().hex}", amount=amount)
        if rt.admission is not None and amount > 0:
            hold.reservation_id = rt.admission.reserve(_scope(period, hold.row_id),
                                                       _route(period), amount)
        o = period.owner
        try:
            with rt.session() as s:
                hold.attempt_id = attempts.begin(s, {
                    "request_id": hold.row_id, "run": uuid.uuid4().hex[:32], "org": o["org"],
                    "team": o["team"], "feature": o["feature"], "provider": period.model.provider,
                    "model": period.model.name, "kind": f"cache_{period.kind}",
                    "worst_case": amount})
        except Exception:
            self.drop(hold)
            raise
        # Noted until its call ends: a worker that dies first leaves it to the sweep.
        open_holds(rt).add(hold.row_id)
        return hold

    def book(self, period: Period, hold: Hold | None) -> None:
        """The storage row, the attempt's end and the settlement, in one transaction."""
        amount = storage_amount(period) if hold is None else hold.amount
        self._bill(period, hold, amount, outcome="ok", billing="exact")

    def lost(self, period: Period, hold: Hold) -> None:
        """The provider call's answer never came: it may have made (or renewed) the cache,
        which then lives the whole period and is billed; charged at the hold, estimated."""
        self._bill(period, hold, hold.amount, outcome="timeout", billing="estimated")

    def _bill(self, period: Period, hold: Hold | None, amount: Decimal, *, outcome: str,
              billing: str) -> None:
        rt = self.rt
        row_id = hold.row_id if hold is not None else f"gcache-{uuid.uuid4().hex}"
        created = period.tokens if period.kind == "create" else 0
        row = storage_row(rt, period, row_id, amount)
        if billing == "estimated":
            row["estimated_cost"] = amount
        with rt.session() as s:
            if hold is not None and hold.attempt_id is not None:
                attempts.end(s, hold.attempt_id, outcome=outcome, billing=billing, cost=amount,
                             input_tokens=created,
                             error_code=None if outcome == "ok" else "cache_call_unanswered")
                attempts.settle_all(s, row_id)
            ledger.record(s, row)
            if rt.admission is not None:
                if hold is not None and hold.reservation_id is not None:
                    rt.admission.settle(hold.reservation_id, amount, session=s,
                                        request=_scope(period, row_id))
                elif amount:
                    rt.admission.charge(_scope(period, row_id), amount, session=s)
        if hold is not None:
            open_holds(rt).done(row_id)

    def drop(self, hold: Hold) -> None:
        """The provider call was refused: the attempt costs nothing, the hold goes back."""
        rt = self.rt
        with rt.session() as s:
            if hold.attempt_id is not None:
                attempts.end(s, hold.attempt_id, outcome="refused", billing="none",
                             cost=Decimal(0))
                attempts.settle_all(s, hold.row_id)
            if hold.reservation_id is not None and rt.admission is not None:
                rt.admission.release(hold.reservation_id, session=s)
        open_holds(rt).done(hold.row_id)


def storage_row(rt: WorkerRuntime, period: Period, row_id: str, amount: Decimal
                ) -> dict[str, Any]:
    """The ledger row of one storage period."""
    o, m = period.owner, period.model
    hours = period.seconds / 3600
    return {"request_id": row_id, "created_at": datetime.now(timezone.utc), "org": o["org"],
            "team": o["team"], "feature": o["feature"], "user": None, "lane": o["lane"],
            "tier": m.tier, "provider": m.provider, "model": m.name, "backend": "api",
            "route_reason": (f"{period.kind} {period.cache}: {period.tokens} tokens x "
                             f"{hours:.4f} h of storage")[:200],
            "outcome": STORAGE, "input_uncached": period.tokens if period.kind == "create"
            else 0, "cost": amount, "baseline_cost": Decimal(0), "list_cost": Decimal(0),
            "price_version": rt.catalogue.version, "prompt_hash": period.fingerprint,
            "attempts": 1 if period.kind != "delete" else 0}


def caches_of(rt: WorkerRuntime) -> ExplicitCaches | None:
    """This worker's explicit-cache manager: None without Redis to share it across workers,
    or with explicit caching switched off."""
    p = rt.settings.providers
    if rt.tokens is None or not p.gemini_explicit_caching:
        return None
    if rt.context_caches is None:
        client = rt.provider("google").client  # type: ignore[attr-defined]
        rt.context_caches = ExplicitCaches(rt.tokens, client, LedgerBooks(rt), rt.catalogue,
                                           ttl_s=p.gemini_cache_ttl_s,
                                           key_prefix=rt.settings.broker.key_prefix,
                                           cold_after_s=p.gemini_cache_cold_after_s)
    return rt.context_caches  # type: ignore[no-any-return]


def explicit_cache_for(rt: WorkerRuntime, env: Envelope, model: ModelSpec) -> str:
    """The explicit cache a Gemini call should name, or "" (implicit caching). Never raises:
    a cache that cannot be had leaves the request on implicit caching."""
    if model.provider != "google":
        return ""
    try:
        caches = caches_of(rt)
        return caches.for_request(env.request, model) if caches is not None else ""
    except Exception as exc:  # noqa: BLE001 - the request must go on without it
        log.warning("explicit cache decision failed for %s: %s", env.request.request_id, exc)
        return ""


def note_reply(rt: WorkerRuntime, env: Envelope, model: ModelSpec, reply: ProviderReply,
               cached: str) -> None:
    """Feed the implicit hit rate of a Gemini request sent without an explicit cache."""
    if model.provider != "google" or cached:
        return
    try:
        caches = caches_of(rt)
        if caches is not None:
            caches.note_implicit(env.request, model, reply.usage.cache_read)
    except Exception as exc:  # noqa: BLE001 - a statistic, not the answer
        log.debug("could not record the implicit hit of %s: %s", env.request.request_id, exc)


def sweep(rt: WorkerRuntime) -> int:
    """Delete the explicit caches whose prefix went cold, and settle the storage calls of
    workers that died mid-call (workers/context_cache_orphans.py); how many caches."""
    from workers.context_cache_orphans import settle_orphans

    caches = caches_of(rt)
    deleted = caches.sweep() if caches is not None else 0
    settle_orphans(rt)
    return deleted


def open_holds(rt: WorkerRuntime) -> Any:
    """This worker's note of storage calls in flight (workers/context_cache_orphans.py)."""
    from workers.context_cache_orphans import OpenHolds

    found = rt.__dict__.get("_storage_holds")
    if found is None:
        found = rt.__dict__["_storage_holds"] = OpenHolds(rt.tokens,
                                                          rt.settings.broker.key_prefix)
    return found

