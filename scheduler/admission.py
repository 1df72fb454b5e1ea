"""Budget admission: reserve the worst case against every applicable budget at once; settle once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.db.budgets import BudgetRow, ReservationRow, change_budgets, to_budget
from models.db.engine import autocommit_engine
from models.db.reservations import (close_reservation, extend_reservation,
                                    reserve_on_postgres, reserve_portable)
from models.domain.budget import (
    SCOPES,
    WINDOWS,
    Budget,
    refusal,
    reservation_lease,
)
from models.domain.errors import QueuePaused
from models.domain.request import ChatRequest
from models.domain.result import Route
from models.domain.settings import Settings
from scheduler import governor
from scheduler.budget_index import BudgetIndex
from scheduler.limit_alerts import LimitAlerts
from scheduler.governor import SqlPauseBook, parse_ids, unreachable

log = logging.getLogger("sluice.admission")

@dataclass(frozen=True)
class AdmissionConfig:
    """Tuning of admission; the defaults suit production."""

    #: How long the list of budgets (which ones apply to a request) is cached. Limits and usage
    #: are never cached: the reserving statement reads them under a row lock.
    budget_cache_ttl_s: float = 1.0
    #: How long the pause table is cached by the workers' second check.
    pause_cache_ttl_s: float = 1.0
    #: Added to the lane's time limit to get a reservation's expiry.
    lease_margin_s: float = 60.0
    #: Connections of the admission pool (PostgreSQL), and as many again under bursts.
    pool_size: int = 8


class SqlAdmission:
    """The Admission protocol on the budget tables (PostgreSQL fast path, portable SQLite path)."""

    def __init__(self, sessions: sessionmaker[Session], *, lease_s: Mapping[str, float],
                 config: AdmissionConfig = AdmissionConfig(), pauses: SqlPauseBook | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.sessions = sessions
        self.lease_s = dict(lease_s)
        self.config = config
        self.pauses = pauses
        self.clock = clock
        engine: Engine = sessions.kw["bind"]
        self._pg = engine.dialect.name == "postgresql"
        # The reserving statement runs alone in autocommit with asynchronous commit. The budget
        # rows are hot: every reservation locks them until its commit, so waiting for the WAL
        # flush there caps admissions at one per fsync. Not waiting is safe: a crash can lose
        # only the newest commits (a WAL prefix survives, so budgets and reservation rows stay
        # consistent), and a worker's confirm() finds such a lost reservation missing and holds
        # the money again, or refuses, before anything is sent. Settles stay synchronous.
        self._fast = autocommit_engine(engine, config.pool_size) if self._pg else None
        self._budgets = BudgetIndex(sessions, config.budget_cache_ttl_s)
        self._alerts = LimitAlerts(lambda doing: self._tx(None, doing), clock, pauses)

    # --- the protocol ---

    def reserve(self, request: ChatRequest, route: Route, amount: Decimal, *,
                within: Callable[[], Any] | None = None) -> str | None:
        """Hold ``amount`` against every budget of ``request``, all or nothing.

        ``within``: a step that must succeed for the reservation to hold (the rate windows).
        It runs once, after the budgets are locked and taken and before that commits; if it
        raises, nothing is held and the error is the refusal. Returns the reservation id,
        None when no budget applies, or raises BudgetExceeded (naming the first budget
        without room; ``within`` then never runs) or LedgerError (database unreachable).
        """
        return self.reserve_once(request, route, amount, within=within)[0]

    def reserve_once(self, request: ChatRequest, route: Route, amount: Decimal, *,
                     within: Callable[[], Any] | None = None) -> tuple[str | None, bool]:
        """:meth:`reserve`, and whether the id is an open reservation the same request (same
        id, same tenant, same budgets) already held: a retry while its first run is open. The
        caller must then never release it: it is the first run's."""
        for _ in range(3):
            ids = self._ids(request)
            if not ids:
                if within is not None:
                    within()
                return None, False
            rid = uuid.uuid4().hex
            fits, budgets, prior = self._try_reserve(rid, ids, request, route, amount, within)
            if prior is not None:
                # The first run's money: the step goes first (once), so a retry it refuses
                # neither grows nor renews that reservation; the caller gives back what it
                # took if a later pass refuses.
                if within is not None:
                    within()
                    within = None
                # One request holds one reservation; it must cover what is asked now too.
                if not self.cover(prior, amount, request, route):
                    continue  # settled or expired meanwhile: hold anew
                return prior, True
            if fits:
                return rid, False  # ``within`` ran inside the reservation's transaction
            full = sorted((b for b in budgets if not b.fits(amount)), key=_widest_first)
            if len(budgets) == len(ids) and full:
                self._alerts.refused(full[0], amount)
                raise refusal(full[0], amount)
            self.invalidate()  # a budget was deleted or added meanwhile: look again
        raise unreachable(RuntimeError("the budget list kept changing"), "reserve")

    def settle(self, reservation_id: str, actual: Decimal, session: Session | None = None,
               request: ChatRequest | None = None) -> bool:
        """Turn the reservation into a spend of ``actual``; True exactly once.

        A reservation the governor already expired still records its spend (the call did
        happen), without releasing its amount a second time. With ``session`` the change joins
        the caller's transaction (the worker's ledger write), so both commit or neither does.
        With ``request``, a budget that started to apply after the reservation was made (set
        while the call ran) is charged the spend too: it counts what the ledger already held
        when it was set, and this row lands after that.
        """
        now = self.clock()
        # Which budgets apply now is read before any budget row is locked (it may roll a
        # window in a transaction of its own, which must not wait on ours).
        current = self._ids(request, rolled=True) if request is not None else []
        with self._tx(session, "settle a reservation") as s:
            held = True
            row = s.execute(close_reservation(reservation_id, "open", "settled", now,
                                              actual)).first()
            if row is None:
                held = False
                row = s.execute(close_reservation(reservation_id, "expired", "settled", now,
                                                  actual)).first()
                if row is None:
                    return False
            amount, ids = row
            listed = parse_ids(ids)
            extra = sorted(set(current) - set(listed)) if actual else []
            if extra:
                # Every row this settle touches is locked first, in id order, as everywhere.
                s.execute(select(BudgetRow.id).where(BudgetRow.id.in_(listed + extra))
                          .order_by(BudgetRow.id).with_for_update())
            rows = list(s.scalars(change_budgets(listed, spent=actual,
                                                 reserved=-amount if held else Decimal(0),
                                                 now=now)).all())
            if extra:
                rows += s.scalars(change_budgets(extra, spent=actual, now=now)).all()
            self._alerts.soft(s, [to_budget(r) for r in rows], now)
        return True

    def charge(self, request: ChatRequest, actual: Decimal, session: Session | None = None
               ) -> None:
        """Spend ``actual`` on every budget of ``request`` that holds no reservation of it (one
        set after admission, when none applied then); nothing when none applies."""
        if not actual:
            return
        ids = self._ids(request)
        if not ids:
            return
        now = self.clock()
        with self._tx(session, "charge budgets") as s:
            rows = s.scalars(change_budgets(ids, spent=actual, now=now)).all()
            self._alerts.soft(s, [to_budget(r) for r in rows], now)

    def _unlisted(self, request: ChatRequest | None, listed: list[int]) -> list[int]:
        """Budgets of ``request`` that apply now but are not among ``listed``."""
        if request is None:
            return []
        return sorted(set(self._ids(request, rolled=True)) - set(listed))

    def release(self, reservation_id: str, session: Session | None = None) -> bool:
        """Drop the reservation without spending; True exactly once (never after a settle)."""
        now = self.clock()
        with self._tx(session, "release a reservation") as s:
            row = s.execute(close_reservation(reservation_id, "open", "released", now,
                                              None)).first()
            if row is None:
                return False
            amount, ids = row
            s.execute(change_budgets(parse_ids(ids), reserved=-amount, now=now))
        return True

    def confirm(self, request: ChatRequest, route: Route, reservation_id: str | None,
                amount: Decimal) -> str | None:
        """The worker's second check, just before the provider call.

        Refuses (QueuePaused) when the route's queue is paused; renews an open reservation's
        expiry and makes it cover ``amount`` on every budget that applies now (see
        :meth:`cover`), refusing (BudgetExceeded) when one lacks the room, an operator lowered
        a limit below what is committed, or a budget set after admission is full; holds the
        money again when the reservation expired meanwhile. Returns the reservation id.
        """
        if self.pauses is not None:
            reason = self.pauses.paused(route.queue)
            if reason:
                raise QueuePaused(f"queue {route.queue} was paused after this request was queued "
                                  f"({reason}); nothing was sent; resubmit after `sluice queues "
                                  "resume` or the budget's window rollover", queue=route.queue)
        if reservation_id is None:
            return self.reserve(request, route, amount)
        if self.cover(reservation_id, amount, request, route):
            return reservation_id
        return self.reserve(request, route, amount)

    def cover(self, reservation_id: str, amount: Decimal, request: ChatRequest,
              route: Route) -> bool:
        """Make the open reservation hold at least ``amount`` on every budget of ``request``
        that applies now, and renew its expiry; False when it is no longer open.

        Before a retry or a fallback the worker asks for what was charged so far plus the next
        attempt's worst case: nothing is sent that the reservation does not cover. Budgets set
        after admission join the reservation with the whole amount; a listed budget whose limit
        was lowered below what is committed refuses. Raises BudgetExceeded naming the budget.
        """
        now = self.clock()
        with self._tx(None, "renew a reservation", refusing=True) as s:
            row = s.execute(update(ReservationRow)
                            .where(ReservationRow.id == reservation_id,
                                   ReservationRow.state == "open")
                            .values(expires_at=now + self._lease(route.lane))
                            .returning(ReservationRow.budget_ids, ReservationRow.amount)).first()
            if row is None:
                return False
            listed, held = parse_ids(row[0]), row[1]
            added = self._unlisted(request, listed)
            target = max(held, amount)
            if not added and target == held:
                over = s.scalars(select(BudgetRow).where(
                    BudgetRow.id.in_(listed),
                    BudgetRow.spent + BudgetRow.reserved > BudgetRow.hard_limit)).first()
                if over is not None:
                    raise refusal(to_budget(over), held)
                return True
            if not extend_reservation(s, reservation_id, listed=listed, added=added, held=held,
                                      target=target, now=now):
                self.invalidate()  # a budget was deleted meanwhile: what remains still holds it
        return True

    def invalidate(self) -> None:
        """Forget the cached budget list (after setting budgets in this process)."""
        self._budgets.invalidate()

    def refresh_budgets(self) -> None:
        """Read the budget list again now: a budget this process just created applies to the
        next request of any thread (a reload already under way could predate it)."""
        self._budgets.refresh()

    def close(self) -> None:
        """Close the admission pool's connections."""
        if self._fast is not None:
            self._fast.dispose()

    # --- internals ---

    def _lease(self, lane: str) -> timedelta:
        return reservation_lease(self.lease_s.get(lane, max(self.lease_s.values(), default=0)),
                                 self.config.lease_margin_s)

    def _ids(self, request: ChatRequest, *, rolled: bool = False) -> list[int]:
        found = self._budgets.refs(request)
        now = self.clock()
        if not rolled and any(resets is not None and resets <= now for _, resets in found):
            self._roll(now)
            return self._ids(request, rolled=True)
        return sorted(i for i, _ in found)

    def _roll(self, now: datetime) -> None:
        with self._tx(None, "roll budget windows", refusing=True) as s:
            governor.roll_windows(s, now)
            governor.resume_finished_budget_pauses(s)
        self.invalidate()
        if self.pauses is not None:
            self.pauses.invalidate()

    def _try_reserve(self, rid: str, ids: list[int], request: ChatRequest, route: Route,
                     amount: Decimal, within: Callable[[], Any] | None = None
                     ) -> tuple[bool, list[Budget], str | None]:
        now = self.clock()
        params = {"rid": rid, "ids": ids, "n": len(ids), "amount": amount,
                  "request_id": request.request_id, "owner": owner_of(request),
                  "budget_ids": ",".join(map(str, ids)),
                  "queue": route.queue, "now": now, "expires": now + self._lease(route.lane)}
        if self._fast is not None:
            return self._reserve_pg(params, within)
        return self._reserve_portable(params, within)

    def _reserve_pg(self, params: dict[str, Any], within: Callable[[], Any] | None = None
                    ) -> tuple[bool, list[Budget], str | None]:
        assert self._fast is not None
        for attempt in (0, 1):
            ran = False
            try:
                with self._fast.connect() as conn:
                    if within is None:  # one statement, autocommit: one round trip
                        return reserve_on_postgres(conn, params)
                    # With a step inside, an explicit transaction: the budget rows stay locked
                    # while it runs, and its refusal rolls the reservation back unseen.
                    conn.exec_driver_sql("BEGIN")
                    try:
                        decided = reserve_on_postgres(conn, params)
                        if decided[0]:
                            ran = True
                            within()
                        conn.exec_driver_sql("COMMIT")
                    except BaseException:
                        _roll_back(conn)
                        raise
                    return decided
            except DBAPIError as exc:
                # A pooled connection the server dropped: retry once on a fresh one (never
                # after the step ran: its caller gives back what the step took).
                if attempt == 0 and exc.connection_invalidated and not ran:
                    continue
                raise unreachable(exc, "reserve budget") from exc
            except SQLAlchemyError as exc:
                raise unreachable(exc, "reserve budget") from exc
        raise AssertionError("unreachable")

    def _reserve_portable(self, params: dict[str, Any], within: Callable[[], Any] | None = None
                          ) -> tuple[bool, list[Budget], str | None]:
        with self._tx(None, "reserve budget", refusing=True) as s:
            decided = reserve_portable(s, params)
            if decided[0] and within is not None:
                within()  # raises: the session rolls the reservation back
            return decided

    @contextmanager
    def _tx(self, session: Session | None, doing: str, *, refusing: bool = False
            ) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        try:
            with self.sessions() as s:
                yield s
                s.commit()
        except SQLAlchemyError as exc:
            raise unreachable(exc, doing, refusing=refusing) from exc


def _roll_back(conn: Any) -> None:
    """Roll back an explicit transaction; a dead connection has none left to roll back."""
    try:
        conn.exec_driver_sql("ROLLBACK")
    except SQLAlchemyError:
        log.debug("rollback after a failed reservation step failed", exc_info=True)


def owner_of(request: ChatRequest) -> str:
    """Whose request a reservation holds money for: a request id is unique per tenant only."""
    return f"{request.org}/{request.team}"


def _widest_first(budget: Budget) -> tuple[int, int, int]:
    return SCOPES.index(budget.scope), WINDOWS.index(budget.window), budget.id


def build_admission(settings: Settings, sessions: sessionmaker[Session]) -> SqlAdmission:
    """The Admission the producer (reserve) and the workers (confirm, settle, release) use."""
    lanes = settings.lanes
    lease = {"interactive": lanes.interactive.time_limit_s, "async": lanes.async_.time_limit_s}
    config = AdmissionConfig(lease_margin_s=settings.broker.lease_margin_s)
    pauses = SqlPauseBook(sessions, ttl_s=config.pause_cache_ttl_s)
    return SqlAdmission(sessions, lease_s=lease, config=config, pauses=pauses)

