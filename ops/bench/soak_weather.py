"""The soak's bad weather: fallbacks, calls slower than their lease, slow batches, hard limits.

Each mode is a share of the soak's requests, made to take its path by the stand-in (faults
scripted per model) and the workers' settings, and a watcher counts, from the ledger, that it
did: fallback attempts, reservations kept open past their lease by the heartbeat, requests
seen waiting in a pending batch. The same watcher checks, every half second and from the
ledger, that no hard limit is passed: the spend the ledger holds plus the open reservations
of every hard budget stay within its limit.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, literal, select

MODES: tuple[str, ...] = ("plain", "fallback", "slow", "batch")
#: The cheap model that fails (500s, scripted) and the flagship it falls back to.
FALLBACK_MODEL, FALLBACK_TO = "gpt-4.1-mini", "gpt-4.1"
#: The model whose calls are slow (a scripted delay, then the answer).
SLOW_MODEL = "claude-haiku-4-5"
HEARTBEAT_S = 0.5
#: A reservation's lease: the lanes' time limit with no margin. A claim is stale after six
#: missed beats (3 s). The slow calls take longer than both; only the heartbeat keeps them.
LEASE_S = 3.0
SLOW_S = 4.5
#: Batches take BATCH_DELAY_S at the provider; a task waits MAX_WAIT_S, then comes back.
BATCH_DELAY_S, MAX_WAIT_S = 3.0, 1.0
MAX_ATTEMPTS = 2
#: Worker threads: slow calls and batch polls each hold one while they wait.
CONCURRENCY = 32


def weather_env(modes: tuple[str, ...]) -> dict[str, str]:
    """Worker settings that make each mode take its path (on top of ``soak_env``)."""
    if not set(modes) - {"plain"}:
        return {}
    return {"SLUICE_PROVIDERS__FALLBACKS": f'{{"{FALLBACK_MODEL}": ["{FALLBACK_TO}"]}}',
            "SLUICE_PROVIDERS__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "SLUICE_BROKER__HEARTBEAT_S": str(HEARTBEAT_S),
            "SLUICE_BROKER__LEASE_MARGIN_S": "0",
            # Time limit = lease; the soft limit bounds the run and outlasts the slow call.
            "SLUICE_LANES__INTERACTIVE__TIME_LIMIT_S": str(LEASE_S),
            "SLUICE_LANES__INTERACTIVE__SOFT_TIME_LIMIT_S": "6",
            "SLUICE_LANES__ASYNC__TIME_LIMIT_S": str(LEASE_S),
            "SLUICE_LANES__ASYNC__SOFT_TIME_LIMIT_S": "6",
            "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": "12",
            "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "200",
            "SLUICE_LANES__ASYNC__BATCH_MAX": "8",
            "SLUICE_BATCH__POLL_INTERVAL_S": "0.2",
            "SLUICE_BATCH__MAX_WAIT_S": str(MAX_WAIT_S),
            # PostgreSQL's connections are shared (a worker's pools grow with its threads).
            "SLUICE_DATABASE__POOL_SIZE": "3"}


def mode_of(i: int, modes: tuple[str, ...]) -> str:
    """The mode of the ``i``-th request."""
    return modes[i % len(modes)]


def request_for(i: int, modes: tuple[str, ...], prefix: str, team: str) -> dict[str, Any]:
    """The ``i``-th soak request: plain ones alternate lanes, as the soak always did."""
    mode = mode_of(i, modes)
    base: dict[str, Any] = {"team": team, "feature": f"soak-{mode}", "max_tokens": 16,
                            "cache": {"mode": "bypass"},
                            "messages": [{"role": "user", "content": f"Rephrase item {i}"}]}
    if mode == "plain":
        lane = "interactive" if (i // len(modes)) % 2 else "async"
        return {**base, "request_id": f"{prefix}{i}", "lane": lane, "model": "cheap",
                "feature": "soak"}
    rid = f"{prefix}{mode}-{i}"
    if mode == "fallback":
        return {**base, "request_id": rid, "lane": "interactive", "model": FALLBACK_MODEL}
    if mode == "slow":
        return {**base, "request_id": rid, "lane": "interactive", "model": SLOW_MODEL}
    return {**base, "request_id": rid, "lane": "async", "model": "cheap",
            "tags": {"batch": "true"}}


def script_faults(standin_url: str, n: int, modes: tuple[str, ...]) -> None:
    """Queue the stand-in's faults: 500s for the fallback model (every attempt of it fails),
    a delay for each slow call; a margin for redelivered runs."""
    def share(mode: str) -> int:
        return sum(1 for i in range(n) if mode_of(i, modes) == mode)

    with httpx.Client(base_url=standin_url, timeout=10) as c:
        if "fallback" in modes:
            c.post("/_standin/faults", json={"model": FALLBACK_MODEL, "path": "openai",
                                             "faults": ["500"] * (share("fallback")
                                                                  * MAX_ATTEMPTS * 2)}
                   ).raise_for_status()
        if "slow" in modes:
            c.post("/_standin/faults", json={"model": SLOW_MODEL, "path": "anthropic",
                                             "faults": [f"timeout={SLOW_S}"] * share("slow")}
                   ).raise_for_status()


def set_limits(sessions: Any, team: str, n: int, modes: tuple[str, ...],
               share: float) -> None:
    """Hard limits that bind mid-run: the team's total at ``share`` of the worst case of all
    ``n`` requests, and the fallback feature's at half of that share of its own."""
    from models.db.budgets import set_budget
    from models.domain.catalogue import load_catalogue
    from models.domain.charges import reach_worst_case, reachable
    from models.domain.cost import prompt_for
    from models.domain.request import parse_request
    from models.domain.settings import load_settings
    from models.domain.tokens import count_request

    catalogue = load_catalogue()
    settings = load_settings({})
    fallbacks = {FALLBACK_MODEL: [FALLBACK_TO]}
    worst: dict[str, Decimal] = {}
    for i in range(n):
        d = request_for(i, modes, "x-", team)
        req = parse_request(d)
        name = settings.routing.cheap_model if d["model"] == "cheap" else d["model"]
        chain = reachable(catalogue, fallbacks, name)
        amount = reach_worst_case(prompt_for(req, chain, count_request(req)), req.max_tokens,
                                  chain)
        worst[d["feature"]] = worst.get(d["feature"], Decimal(0)) + amount
    with sessions() as s:
        set_budget(s, "team", team, "total",
                   hard=(sum(worst.values()) * Decimal(str(share))).quantize(Decimal("1e-9")))
        if "soak-fallback" in worst:
            set_budget(s, "feature", "soak-fallback", "total",
                       hard=(worst["soak-fallback"] * Decimal(str(share / 2)))
                       .quantize(Decimal("1e-9")))
        s.commit()


class Watch(threading.Thread):
    """Every half second: the governor's tick (it frees expired reservations, as beat does),
    the hard-limit check from the ledger, and evidence that each mode took its path."""

    def __init__(self, sessions: Any, prefix: str) -> None:
        super().__init__(daemon=True, name="soak-watch")
        self.sessions, self.prefix = sessions, prefix
        self.halt = threading.Event()
        self.checks = self.over_limit = self.expired = 0
        self.worst_room = Decimal("Infinity")
        self.pending: set[str] = set()
        self.renewed: set[str] = set()
        self.errors = 0
        #: The first breaches, with what the budget row itself said and who held money.
        self.breaches: list[dict[str, Any]] = []

    def run(self) -> None:
        from scheduler import governor

        while not self.halt.wait(0.5):
            try:
                self.expired += governor.tick(self.sessions, post=None)["expired"]
                self.check()
            except Exception:  # noqa: BLE001 - a failed pass (a database hiccup) is retried
                self.errors += 1

    def check(self) -> None:
        """One pass of the checks (also run once more after the soak)."""
        from models.db.attempts import AttemptRow
        from models.db.budgets import BudgetRow, ReservationRow
        from models.db.tables import LedgerRow

        with self.sessions() as s:
            for b in s.scalars(select(BudgetRow).where(BudgetRow.hard_limit.is_not(None))):
                column = {"team": LedgerRow.team, "feature": LedgerRow.feature}.get(b.scope)
                if column is None:
                    continue
                spent = (select(func.coalesce(func.sum(LedgerRow.cost), 0))
                         .where(LedgerRow.org == b.org, column == b.key).scalar_subquery())
                held = (select(func.coalesce(func.sum(ReservationRow.amount), 0))
                        .where(ReservationRow.state == "open",
                               (literal(",") + ReservationRow.budget_ids + literal(","))
                               .like(f"%,{b.id},%")).scalar_subquery())
                # One statement: one snapshot of both (a settle moves money between them).
                ledger_spent, open_held = s.execute(select(spent, held)).one()
                room = b.hard_limit - Decimal(ledger_spent) - Decimal(open_held)
                self.checks += 1
                self.worst_room = min(self.worst_room, room)
                if room < 0:
                    self.over_limit += 1
                    if len(self.breaches) < 3:
                        self.breaches.append(_breach(s, b, ledger_spent, open_held))
            like = f"{self.prefix}%"
            self.pending.update(s.scalars(select(AttemptRow.request_id).where(
                AttemptRow.outcome == "pending", AttemptRow.request_id.like(like))))
            # Open, and older than a lease counted from the run's claim: renewed since.
            self.renewed.update(s.scalars(
                select(ReservationRow.request_id)
                .join(LedgerRow, LedgerRow.request_id == ReservationRow.request_id)
                .where(ReservationRow.state == "open", LedgerRow.outcome == "running",
                       ReservationRow.request_id.like(f"{self.prefix}slow-%"),
                       func.now() > LedgerRow.created_at + func.make_interval(
                           0, 0, 0, 0, 0, 0, LEASE_S + 0.5))))


def _breach(s: Any, budget: Any, ledger_spent: Any, open_held: Any) -> dict[str, Any]:
    """A hard limit passed: the ledger's and the budget row's view, and the requests whose
    open reservation and ledger cost were both counted (a row and its hold at once)."""
    from models.db.budgets import ReservationRow
    from models.db.tables import LedgerRow

    both = s.execute(
        select(LedgerRow.request_id, LedgerRow.outcome, LedgerRow.cost, ReservationRow.amount)
        .join(ReservationRow, ReservationRow.request_id == LedgerRow.request_id)
        .where(ReservationRow.state == "open", LedgerRow.cost > 0,
               (literal(",") + ReservationRow.budget_ids + literal(","))
               .like(f"%,{budget.id},%"))).all()
    return {"budget": f"{budget.scope}:{budget.key}", "hard_limit": str(budget.hard_limit),
            "ledger_spent": str(ledger_spent), "open_held": str(open_held),
            "row_spent": str(budget.spent), "row_reserved": str(budget.reserved),
            "costed_and_held": [(r, o, str(c), str(a)) for r, o, c, a in both[:10]]}


def evidence(sessions: Any, prefix: str, watch: Watch) -> dict[str, Any]:
    """What each mode did, from the ledger and the watcher."""
    from models.db.attempts import AttemptRow
    from models.db.tables import LedgerRow

    like = f"{prefix}%"
    with sessions() as s:
        fallbacks = s.scalar(select(func.count()).select_from(AttemptRow).where(
            AttemptRow.request_id.like(like), AttemptRow.kind == "fallback"))
        answered = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.request_id.like(like), LedgerRow.outcome == "ok",
            LedgerRow.model == FALLBACK_TO))
        slow_ok = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.request_id.like(f"{prefix}slow-%"), LedgerRow.outcome == "ok",
            LedgerRow.provider_ms > LEASE_S * 1000))
        batch_late = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.request_id.like(like), LedgerRow.outcome == "ok",
            LedgerRow.batch.is_(True), LedgerRow.latency_ms > MAX_WAIT_S * 1000))
        refused = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.request_id.like(like), LedgerRow.error_code == "budget_exceeded"))
    watch.check()
    if watch.breaches:  # why, for whoever reads a failed run
        import sys

        for breach in watch.breaches:
            print(f"hard limit passed: {breach}", file=sys.stderr)
        explain(sessions, [r[0] for b in watch.breaches for r in b["costed_and_held"]][:5])
    return {"fallback_attempts": int(fallbacks or 0), "answered_by_fallback": int(answered or 0),
            "slow_answered_past_lease": int(slow_ok or 0),
            "leases_kept_by_heartbeat": len(watch.renewed),
            "batches_seen_pending": len(watch.pending),
            "batch_answered_after_wait": int(batch_late or 0),
            "refused_by_worker_check": int(refused or 0),
            "hard_limit_checks": watch.checks, "over_limit": watch.over_limit,
            "least_room_usd": str(watch.worst_room), "expired_by_governor": watch.expired,
            "watch_errors": watch.errors}


def unexercised(counts: dict[str, Any], modes: tuple[str, ...]) -> list[str]:
    """Modes whose path the run never took (the soak then proves nothing about them)."""
    need = {"fallback": ("fallback_attempts", "answered_by_fallback"),
            "slow": ("leases_kept_by_heartbeat", "slow_answered_past_lease"),
            "batch": ("batches_seen_pending", "batch_answered_after_wait")}
    missing = [m for m in modes if any(not counts.get(k) for k in need.get(m, ()))]
    refused = sum(v for k, v in counts.items() if k == "failed_budget_exceeded")
    if set(modes) - {"plain"} and not refused + counts.get("refused_by_worker_check", 0):
        missing.append("hard limits (none refused anything)")
    return missing


def explain(sessions: Any, request_ids: list[str]) -> None:
    """Print the attempts and reservations of ``request_ids`` (to stderr)."""
    import sys

    from models.db.attempts import AttemptRow
    from models.db.budgets import ReservationRow
    from models.db.tables import LedgerRow

    with sessions() as s:
        for rid in request_ids:
            row = s.scalars(select(LedgerRow).where(LedgerRow.request_id == rid)).first()
            print(f"--- {rid}: {row.outcome if row else None} {row.cost if row else ''}",
                  file=sys.stderr)
            for a in s.scalars(select(AttemptRow).where(AttemptRow.request_id == rid)
                               .order_by(AttemptRow.id)):
                print(f"  attempt {a.id} run {a.run[:8]} {a.kind} {a.model} {a.outcome} "
                      f"{a.cost} {a.created_at:%H:%M:%S.%f} settled={a.settled}",
                      file=sys.stderr)
            for r in s.scalars(select(ReservationRow).where(ReservationRow.request_id == rid)
                               .order_by(ReservationRow.created_at)):
                print(f"  reservation {r.id[:8]} {r.state} {r.amount} actual={r.actual} "
                      f"{r.created_at:%H:%M:%S.%f} closed={r.closed_at:%H:%M:%S.%f}"
                      if r.closed_at else f"  reservation {r.id[:8]} {r.state}",
                      file=sys.stderr)
