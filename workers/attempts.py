"""One run's provider attempts: each admitted, recorded before it is sent, charged after."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db import attempts, final_pg, ledger
from models.domain.quality import PURPOSE_TAG
from models.domain.catalogue import ModelSpec
from models.domain.charges import estimate, outcome_of
from models.domain.cost import prompt_for, worst_case_cost
from models.domain.deployments import deployment_name
from models.domain.errors import (BatchPending, Cancelled, LedgerError, ProviderError,
                                  ProviderRetryable, TimeLimitExceeded)
from models.domain.tokens import count_text
from queues.envelope import Envelope
from workers.batch.pending import pend
from workers.runtime import WorkerRuntime

log = logging.getLogger("sluice.attempts")
T = TypeVar("T")


class OutOfTime(ProviderRetryable):
    """Raised inside a stream when the run's time limit passes: the attempt is abandoned."""

    code = "time_limit"


class RunMoney:
    """What one run (one delivery of a task) sends and owes.

    Before each attempt it checks the run's time limit and makes the reservation cover what
    this run was charged so far plus the attempt's worst case (a retry after a billed timeout,
    a fallback to a dearer model); then it writes the attempt as ``sent``, so a worker killed
    mid-call leaves a row the next run charges. A failed attempt is charged at once (an
    estimate when its bill is unknown); the successful one is written with the ledger row.
    """

    def __init__(self, rt: WorkerRuntime, env: Envelope, *, started: float,
                 held: Decimal) -> None:
        self.rt, self.env = rt, env
        self.run = uuid.uuid4().hex
        lane = rt.settings.lanes.get(env.request.lane)
        #: The lane's soft limit bounds the whole run: past it nothing more is sent, and a call
        #: in flight is abandoned (the threads pool enforces no Celery time limit).
        self.deadline = started + lane.soft_time_limit_s
        self.held = held
        self.spent = Decimal(0)
        self.count = 0
        self.final: dict[str, Any] | None = None
        self._last_model: tuple[str, str] = ("", "")
        #: The attempt being made (its row is written): a shared call's placement names it.
        self.current: int | None = None
        self.on_reservation: Callable[[str | None], None] = lambda _rid: None

    @property
    def last_deployment(self) -> str:
        """The deployment of the last attempt this run made ('' before any)."""
        return self._last_model[1]

    @property
    def reservation_id(self) -> str | None:
        """The reservation this run settles (it may change when an expired one is re-held)."""
        return self.env.reservation_id

    def remaining(self) -> float:
        """Seconds left of the run's time limit."""
        return self.deadline - time.time()

    def attempt(self, model: ModelSpec, call: Callable[[float], T], *, stream: bool = False,
                received: Callable[[], str] = lambda: "", batch: bool = False,
                pending: int | None = None) -> T:
        """Make one admitted, recorded attempt: ``call(seconds_left)``; ``pending``: the id of
        a batch attempt an earlier visit left pending (already admitted and recorded)."""
        req = self.env.request
        left = self.remaining()
        if left <= 0:
            raise TimeLimitExceeded(
                f"request {req.request_id} used up its lane's time limit "
                f"(SLUICE_LANES__{req.lane.upper()}__SOFT_TIME_LIMIT_S) after {self.count} "
                "attempt(s); nothing more was sent; retry it, or raise the limit",
                request_id=req.request_id, attempts=self.count)
        if pending is None:
            worst = worst_case_cost(prompt_for(req, [model], self.env.prompt_tokens),
                                    req.max_tokens, model)
            self._admit(self.spent + worst)
            # Another deployment of the same model is a fallback too (another provider bill).
            kind = ("call" if self.count == 0 else
                    "retry" if (model.name, deployment_name(model)) == self._last_model
                    else "fallback")
            aid = self._begin(model, kind, worst, stream=stream, batch=batch)
        else:
            aid = pending
        self.count += 1
        self._last_model = (model.name, deployment_name(model))
        self.current = aid
        try:
            result = call(left)
        except BatchPending as waiting:
            # Still at the provider: neither lost nor charged; the next visit takes it up.
            self._pend(aid, waiting)
            raise
        except Cancelled:
            # Its provider batch was cancelled before answering it: nothing was billed.
            with self.rt.session() as s:
                attempts.end(s, aid, outcome="cancelled", billing="exact", cost=Decimal(0),
                             error_code=Cancelled.code)
            raise
        except ProviderError as err:
            self._charge_failed(aid, model, err, received())
            raise
        if result is None:
            # Nothing came of it (a provider batch that failed retryably: the request is
            # answered directly instead); the provider bills nothing for it.
            self._end_unbilled(aid)
            return result
        self.final = {"attempt_id": aid, "model": model.name}
        return result

    def _pend(self, aid: int, waiting: BatchPending) -> None:
        """Leave attempt ``aid`` pending for the next visit; a database error is a LedgerError:
        the attempt stays ``sent``, so the run's error row charges it at its worst case (the
        provider bills the batch) and nothing the provider may bill is left out."""
        req = self.env.request
        try:
            with self.rt.session() as s:
                pend(s, aid)
        except SQLAlchemyError as exc:
            raise LedgerError(
                f"request {req.request_id} waits in a "
                f"{waiting.details.get('provider') or 'provider'} batch, but the ledger "
                f"could not record that its attempt is pending ({exc.__class__.__name__}); "
                "the attempt is charged at its worst case, as the provider will bill the "
                "batch; retry the request once the database is back",
                request_id=req.request_id) from exc

    def _end_unbilled(self, aid: int) -> None:
        try:
            with self.rt.session() as s:
                attempts.end(s, aid, outcome="refused", billing="none", cost=Decimal(0),
                             error_code="no_answer")
        except SQLAlchemyError as exc:
            log.warning("could not end the unanswered attempt %s: %s", aid, exc)

    def _admit(self, need: Decimal) -> None:
        """Hold ``need`` before sending: refused (BudgetExceeded) if a budget lacks it."""
        admission, rid = self.rt.admission, self.env.reservation_id
        if admission is None or need <= self.held or rid is None:
            # No reservation: no budget applied at the second check a moment ago.
            return
        if not admission.cover(rid, need, self.env.request, self.env.route):
            rid = admission.reserve(self.env.request, self.env.route, need)
            self.env = self.env.model_copy(update={"reservation_id": rid})
            self.on_reservation(rid)
        self.held = need

    def _begin(self, model: ModelSpec, kind: str, worst: Decimal, *, stream: bool,
               batch: bool) -> int:
        req = self.env.request
        values = {"request_id": req.request_id, "run": self.run, "org": req.org,
                  "team": req.team, "feature": req.feature, "provider": model.provider,
                  "model": model.name, "deployment": deployment_name(model), "kind": kind,
                  "stream": stream, "batch": batch, "worst_case": worst}
        try:
            aid = self.rt.begin_attempt(values, hold=self._hold())
            if aid is None:
                # The lease lapsed before anything was sent (only a run with no attempt yet
                # can lose it: the governor keeps any with an unsettled one) and the governor
                # freed the money: hold it again, or refuse, before sending.
                log.warning("reservation %s of %s lapsed before its call; holding %s again",
                            self.env.reservation_id, req.request_id, self.held)
                rid = self.rt.admission.reserve(req, self.env.route, self.held)
                self.env = self.env.model_copy(update={"reservation_id": rid})
                self.on_reservation(rid)
                aid = self.rt.begin_attempt(values, hold=self._hold())
            if aid is None:
                raise LedgerError(f"request {req.request_id}: its reservation lapsed twice "
                                  "before the provider call; nothing was sent; retry it",
                                  request_id=req.request_id)
            return aid
        except SQLAlchemyError as exc:
            # Not recorded, so not sent: a provider bill the ledger cannot see is the one
            # thing this must never allow.
            raise LedgerError(f"request {req.request_id}: could not record the provider "
                              f"attempt before sending it ({exc.__class__.__name__}); nothing "
                              "was sent; retry once the database is back",
                              request_id=req.request_id) from exc

    def _hold(self) -> tuple[str, datetime] | None:
        """The reservation the next attempt is written under, renewed for a lease."""
        rid = self.env.reservation_id
        if rid is None or self.rt.admission is None:
            return None
        return rid, datetime.now(timezone.utc) + self.rt.lease(self.env.request.lane)

    def _charge_failed(self, aid: int, model: ModelSpec, err: ProviderError, text: str) -> None:
        req = self.env.request
        outcome = outcome_of(err.details.get("billed"), streamed_text=bool(text),
                             abandoned=isinstance(err, OutOfTime),
                             unparseable=bool(err.details.get("unparseable")))
        usage, cost = estimate(outcome, prompt=prompt_for(req, [model], self.env.prompt_tokens),
                               received_tokens=count_text(text) if text else 0,
                               max_tokens=req.max_tokens, model=model)
        self.spent += cost
        try:
            with self.rt.session() as s:
                attempts.end(s, aid, outcome=outcome, billing="estimated" if cost else "none",
                             cost=cost, input_tokens=usage.input_total,
                             output_tokens=usage.output, error_code=err.code)
        except SQLAlchemyError as exc:
            # Left ``sent``: the run that finishes the request charges it at its worst case.
            log.warning("could not record the failed attempt %s of %s: %s", aid,
                        req.request_id, exc)

    def final_values(self, cost: Decimal, input_tokens: int, output_tokens: int,
                     batch: bool) -> dict[str, Any] | None:
        """The successful attempt's end, to write with the ledger row (JSON-safe)."""
        if self.final is None:
            return None
        return {"attempt_id": self.final["attempt_id"], "cost": str(cost),
                "input_tokens": input_tokens, "output_tokens": output_tokens,
                "billing": "exact", "batch": batch}


def finalize(s: Session, rt: WorkerRuntime, kind: str, row: dict[str, Any],
             reservation_id: str | None, final: dict[str, Any] | None) -> bool:
    """Finish the ledger row with the sum of the request's attempts and settle what is not
    settled yet; True exactly once. The row's ``cost`` becomes the sum of every attempt
    (earlier runs' included), ``estimated_cost`` the estimated part."""
    rid = row["request_id"]
    if final_pg.applies(s):
        # PostgreSQL: the same statements in one round trip instead of five.
        first, owed, owed_estimated = final_pg.finish(s, row, final)
    else:
        first, owed, owed_estimated = _finish_portable(s, row, final)
    admission = rt.admission
    if not first:
        # Another run finished the row (a worker of the previous release took a live run
        # over): what this run paid is still spend, on the row and on the budgets.
        if owed:
            ledger.add_cost(s, rid, owed, owed_estimated)
            if admission is not None and not (reservation_id and admission.settle(
                    reservation_id, owed, session=s, request=_scopes(row))):
                admission.charge(_scopes(row), owed, session=s)
        return False
    if admission is None:
        return True
    if reservation_id:
        if kind == "ok" or owed:
            if not admission.settle(reservation_id, owed, session=s, request=_scopes(row)) \
                    and owed:
                # Closed meanwhile (a takeover released the hold a dead run re-made after a
                # lapse, then adopted its stashed answer): the spend still reaches the budgets.
                admission.charge(_scopes(row), owed, session=s)
        else:
            admission.release(reservation_id, session=s)
    elif owed:
        admission.charge(_scopes(row), owed, session=s)
    return True


def _finish_portable(s: Session, row: dict[str, Any], final: dict[str, Any] | None
                     ) -> tuple[bool, Decimal, Decimal]:
    """models.db.final_pg.finish one statement at a time (SQLite, other drivers)."""
    rid = row["request_id"]
    if final is not None:
        ended = attempts.end(s, int(final["attempt_id"]), outcome="ok", billing=final["billing"],
                             cost=Decimal(final["cost"]), input_tokens=int(final["input_tokens"]),
                             output_tokens=int(final["output_tokens"]))
        if not ended and not attempts.exists(s, int(final["attempt_id"])):
            # Its ``sent`` row was lost (a database crash before it was flushed): the answer
            # was paid for all the same, so it is recorded now, whole.
            aid = attempts.begin(s, {
                "request_id": rid, "run": "recovered", "org": row.get("org", "default"),
                "team": row["team"], "feature": row["feature"], "provider": row["provider"],
                "model": row["model"], "deployment": row.get("deployment", ""), "kind": "call",
                "batch": bool(final.get("batch")),
                "worst_case": Decimal(final["cost"])})
            attempts.end(s, aid, outcome="ok", billing=final["billing"],
                         cost=Decimal(final["cost"]), input_tokens=int(final["input_tokens"]),
                         output_tokens=int(final["output_tokens"]))
    # Whatever is still ``sent`` now is an attempt whose end could not be written, or a dead
    # run's: the provider may have billed it, so it is charged at its worst case.
    attempts.charge_lost(s, rid)
    total, estimated, n = attempts.charged(s, rid)
    row.update(cost=total, estimated_cost=estimated, attempts=n)
    first = ledger.finish(s, row)
    owed, owed_estimated = attempts.settle_all_split(s, rid)
    return first, owed, owed_estimated


def record_answer(rt: WorkerRuntime, env: Envelope, result: Any, *, batch: bool
                  ) -> dict[str, Any]:
    """An attempt row for an answer a dead run bought but recorded no attempt for (a stash of
    the previous release): its end, exact, to write with the ledger row."""
    req = env.request
    with rt.session() as s:
        aid = attempts.begin(s, {
            "request_id": req.request_id, "run": uuid.uuid4().hex, "org": req.org,
            "team": req.team, "feature": req.feature, "provider": result.provider,
            "model": result.model, "deployment": result.deployment, "kind": "call",
            "batch": batch, "worst_case": result.cost})
    return {"attempt_id": aid, "cost": str(result.cost), "input_tokens": result.usage.input_total,
            "output_tokens": result.usage.output, "billing": "exact", "batch": batch}


def charge_lost(rt: WorkerRuntime, request_id: str, run: str) -> None:
    """Charge the attempts a dead run left ``sent`` (taken over by ``run``) at their worst
    case: the provider may have billed them."""
    try:
        with rt.session() as s:
            n = attempts.charge_lost(s, request_id, not_run=run)
    except SQLAlchemyError as exc:
        log.warning("could not charge the lost attempts of %s now (its final write will): %s",
                    request_id, exc)
        return
    if n:
        log.warning("request %s: %d attempt(s) of a dead run charged at their worst case",
                    request_id, n)


def _scopes(row: dict[str, Any]) -> Any:
    """What budget matching reads of a request (org, lane, team, feature, user), from its row:
    the outbox replays rows, not requests."""
    return SimpleNamespace(org=row.get("org", "default"), lane=row.get("lane"),
                           team=row.get("team"), feature=row.get("feature"),
                           user=row.get("user"),
                           # A shadow's or judge's row settles on the shadow budget only.
                           tags={PURPOSE_TAG: row.get("purpose", "serve")})
