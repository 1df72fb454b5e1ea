"""The budget governor: durable queue pauses, consumer sync, window rollover, expiry, alerts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.db.attempts import AttemptRow
from models.db.budgets import (
    BudgetRow,
    PauseRow,
    ReservationRow,
    aware,
    change_budgets,
    insert_ignore,
    to_budget,
)
from models.domain.budget import WINDOWS, Budget, pause_queues, usd, window_bounds
from models.domain.errors import LedgerError
from models.domain.settings import Settings
from scheduler.alerts import deliver_alerts, post_json, soft_alerts

log = logging.getLogger("sluice.governor")
#: Worker control command (registered in workers.governor_tasks) that re-adds a worker's own
#: queues; a plain ``add_consumer`` broadcast would make API workers consume GPU queues too.
RESUME_COMMAND = "sluice_resume_queues"
#: Its twin, quiet and idempotent, re-sent every tick: cancels only what a worker still consumes.
PAUSE_COMMAND = "sluice_pause_queues"
OPERATOR = "operator"
#: How long settled, released and expired reservations are kept (for `budget show`, audits).
KEEP_CLOSED = timedelta(days=7)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SqlPauseBook:
    """Which queues are paused, read from the ``pauses`` table and cached for ``ttl_s``."""

    def __init__(self, sessions: sessionmaker[Session], *, ttl_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self._loaded_at = float("-inf")

    def paused(self, queue: str) -> str | None:
        """The reason ``queue`` is paused, or None; raises LedgerError when it cannot tell."""
        if self.clock() - self._loaded_at > self.ttl_s:
            with self._lock:
                if self.clock() - self._loaded_at > self.ttl_s:
                    self._reasons = self._load()
                    self._loaded_at = self.clock()
        return self._reasons.get(queue)

    def invalidate(self) -> None:
        """Forget the cached pauses; the next question reads the table."""
        self._loaded_at = float("-inf")

    def _load(self) -> dict[str, str]:
        try:
            with self.sessions() as s:
                rows = s.execute(select(PauseRow.queue, PauseRow.reason)
                                 .order_by(PauseRow.created_at)).all()
        except SQLAlchemyError as exc:
            # Fail closed: not knowing whether a queue is paused refuses the request.
            raise unreachable(exc, "read queue pauses") from exc
        reasons: dict[str, list[str]] = {}
        for queue, reason in rows:
            reasons.setdefault(queue, []).append(reason)
        return {q: "; ".join(r) for q, r in reasons.items()}


def build_pause_book(settings: Settings, sessions: sessionmaker[Session]) -> SqlPauseBook:
    """The PauseBook the producer and the workers consult before dispatch and before a call."""
    return SqlPauseBook(sessions)


def unreachable(exc: Exception, doing: str, *, refusing: bool = True) -> LedgerError:
    """A LedgerError saying the budget tables could not be used (and, if so, that admission
    refused: nothing was dispatched)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    head = "budget admission refused: " if refusing else ""
    tail = "nothing was dispatched. " if refusing else ""
    return LedgerError(
        f"{head}could not {doing} in the ledger database ({first}); {tail}Check that the "
        "database runs, that SLUICE_DATABASE__URL points at it and that `sluice migrate` ran, "
        "then retry", doing=doing)


# --- durable pauses and the workers' consumers ---


def paused_queues(session: Session) -> dict[str, list[str]]:
    """Every paused queue with its reasons."""
    out: dict[str, list[str]] = {}
    for queue, reason in session.execute(select(PauseRow.queue, PauseRow.reason)
                                         .order_by(PauseRow.created_at)):
        out.setdefault(queue, []).append(reason)
    return out


def pause(sessions: sessionmaker[Session], queues: Iterable[str], reason: str, *,
          cause: str = OPERATOR, control: Any = None, now: datetime | None = None) -> list[str]:
    """Pause ``queues`` durably, and on every worker given ``control``; returns the new ones."""
    now = now or _now()
    added = []
    with sessions() as s:
        for q in queues:
            if insert_ignore(s, PauseRow.__table__, {"queue": q, "cause": cause,
                                                     "reason": reason[:300], "created_at": now},
                             ["queue", "cause"]):
                added.append(q)
        s.commit()
    for q in added:
        log.warning("queue %s paused: %s", q, reason)
    if control is not None:
        for q in queues:
            control.cancel_consumer(q)
    return added


def resume(sessions: sessionmaker[Session], queues: Iterable[str], *, cause: str | None = None,
           control: Any = None) -> list[str]:
    """Lift the pauses of ``queues`` (every cause, or one); returns the queues now free."""
    queues = list(queues)
    with sessions() as s:
        stmt = delete(PauseRow).where(PauseRow.queue.in_(queues))
        if cause is not None:
            stmt = stmt.where(PauseRow.cause == cause)
        s.execute(stmt)
        still = paused_queues(s)
        s.commit()
    free = [q for q in queues if q not in still]
    for q in free:
        log.warning("queue %s resumed", q)
    if control is not None and free:
        control.broadcast(RESUME_COMMAND, arguments={"queues": free})
    return free


def record_budget_pause(session: Session, budget: Budget, now: datetime) -> list[str]:
    """Pause the queues an exhausted deployment-wide lane budget covers (an org's own budget
    pauses nothing: queues are shared by every org); the caller commits."""
    reason = (f"budget {budget.name} reached its hard limit {usd(budget.hard_limit)} (spent "
              f"{usd(budget.spent)}, reserved {usd(budget.reserved)}); it resumes "
              + (f"at {budget.resets_at.isoformat()}" if budget.resets_at else "when raised")
              + " or with `sluice queues resume`")
    added = []
    for q in pause_queues(budget):
        values = {"queue": q, "cause": f"budget:{budget.id}", "reason": reason[:300],
                  "budget_id": budget.id, "window_start": budget.window_start,
                  "hard_limit": budget.hard_limit, "created_at": now}
        if insert_ignore(session, PauseRow.__table__, values, ["queue", "cause"]):
            added.append(q)
    return added


def sync_consumers(control: Any, paused: Iterable[str], queues: Sequence[str]) -> None:
    """Make every worker's consumers match the pause table (idempotent; re-sent each tick)."""
    paused = set(paused)
    if paused:
        control.broadcast(PAUSE_COMMAND, arguments={"queues": sorted(paused)})
    free = [q for q in queues if q not in paused]
    if free:
        control.broadcast(RESUME_COMMAND, arguments={"queues": free})


def resume_finished_budget_pauses(session: Session) -> list[str]:
    """Drop budget pauses whose budget rolled over, was raised, is gone or no longer pauses
    shared queues (an org's own budget, paused by an older release); the caller commits."""
    rows = session.execute(select(PauseRow, BudgetRow)
                           .outerjoin(BudgetRow, PauseRow.budget_id == BudgetRow.id)
                           .where(PauseRow.budget_id.is_not(None))).all()
    done = []
    for p, b in rows:
        if (b is None or p.window_start is None or aware(b.window_start) != aware(p.window_start)
                or (p.hard_limit is not None and b.hard_limit > p.hard_limit)
                or p.queue not in pause_queues(to_budget(b))):
            session.execute(delete(PauseRow).where(PauseRow.id == p.id))
            done.append(p.queue)
    return done


# --- windows, expiry, alerts ---


def roll_windows(session: Session, now: datetime) -> int:
    """Start a new window for every budget whose window has ended; the caller commits.

    Spend starts again from zero; open reservations stay held (they settle into the new
    window, when the money is actually spent). Guarded by ``resets_at <= now``: exactly once.
    """
    rolled = 0
    for window in WINDOWS:
        start, resets = window_bounds(window, now)
        if resets is None:
            continue
        res = session.execute(update(BudgetRow)
                              .where(BudgetRow.window == window, BudgetRow.resets_at <= now)
                              .values(spent=Decimal(0), window_start=start, resets_at=resets,
                                      updated_at=now))
        rolled += cast(CursorResult[Any], res).rowcount or 0
    return rolled


def release_expired(session: Session, now: datetime) -> int:
    """Release reservations whose worker never settled them (crashed); the caller commits.

    Not one whose request has an attempt not yet settled (still ``sent``, or charged): its
    worker died mid-request, the provider may bill those calls, and the run that takes the
    request over charges them against this very reservation. Freed now, the money could be
    reserved by others and then spent twice over the limit.
    """
    in_flight = (select(AttemptRow.id).where(AttemptRow.request_id == ReservationRow.request_id,
                                             AttemptRow.settled.is_(False)).exists())
    rows = session.execute(update(ReservationRow)
                           .where(ReservationRow.state == "open", ReservationRow.expires_at < now,
                                  ~in_flight)
                           .values(state="expired", closed_at=now)
                           .returning(ReservationRow.amount, ReservationRow.budget_ids)).all()
    freed: dict[int, Decimal] = {}
    for amount, ids in rows:
        for bid in parse_ids(ids):
            freed[bid] = freed.get(bid, Decimal(0)) + amount
    for bid in sorted(freed):  # one budget at a time, in id order: no deadlock with settles
        session.execute(change_budgets([bid], reserved=-freed[bid], now=now))
    if rows:
        log.warning("released %d expired budget reservations", len(rows))
    return len(rows)


def prune_reservations(session: Session, before: datetime) -> int:
    """Delete reservations closed before ``before`` (the ledger keeps the history that matters)."""
    res = session.execute(delete(ReservationRow).where(ReservationRow.state != "open",
                                                       ReservationRow.closed_at < before))
    return cast(CursorResult[Any], res).rowcount or 0


def parse_ids(text: str) -> list[int]:
    """Budget ids from a reservation's comma-separated list."""
    return [int(x) for x in text.split(",") if x]


def tick(sessions: sessionmaker[Session], *, control: Any = None, queues: Sequence[str] = (),
         now: datetime | None = None,
         post: Callable[[str, dict[str, Any]], Any] | None = post_json) -> dict[str, int]:
    """One governor pass: roll windows, release expired reservations, lift finished budget
    pauses, raise soft alerts, deliver webhooks, and re-sync every worker's consumers."""
    now = now or _now()
    with sessions() as s:
        rolled = roll_windows(s, now)
        expired = release_expired(s, now)
        prune_reservations(s, now - KEEP_CLOSED)
        resumed = resume_finished_budget_pauses(s)
        alerts = soft_alerts(s, now)
        s.commit()
        delivered = deliver_alerts(s, post, now) if post is not None else 0
        s.commit()
        paused = paused_queues(s)
    if control is not None and queues:
        sync_consumers(control, paused, queues)
    return {"rolled": rolled, "expired": expired, "resumed": len(resumed), "alerts": alerts,
            "delivered": delivered, "paused": len(paused)}
