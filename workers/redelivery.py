"""Redeliveries: the answer stash, a duplicate delivery's reply, what a copy brought back."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from models.domain.errors import SluiceError
from queues.envelope import Envelope, error_reply
from workers.runtime import WorkerRuntime

log = logging.getLogger("workers.service")


class ResultLost(SluiceError):
    """A previous run finished this request but its answer was not kept; resubmit it anew."""

    code = "result_lost"


class AnswerStash(Protocol):
    """Where a run keeps its answer for a redelivery of the same task (workers.tasks._Stash)."""

    def keep(self, record: dict[str, Any]) -> None:
        """Keep ``{"reply": ..., "reservation_id": ...}`` and, where the store can, push the
        reply to its caller in the same step; may raise (the caller logs it)."""

    def read(self) -> dict[str, Any] | None:
        """What an earlier run of this task kept, if anything."""


def release_copy(rt: WorkerRuntime, env: Envelope) -> None:
    """Release the reservation a duplicate delivery brought (a retry under the same request
    id): it is not the one the request's own run holds or settled. Idempotent."""
    if env.reservation_id is None or rt.admission is None:
        return
    try:
        rt.admission.release(env.reservation_id)
    except SluiceError as exc:
        log.warning("could not release the duplicate's reservation %s (it expires): %s",
                    env.reservation_id, exc)


def release_dead_runs(rt: WorkerRuntime, env: Any, keep: str | None = None) -> str | None:
    """A run taking over a dead one's claim: reservations other runs of this request left
    open (the dead run's second check re-held an expired one, and nobody settles it now) go
    back; this run holds its own, and charges the dead run's attempts to it. Else a request
    refused at this second check left the dead run's reservation held until it expired.
    ``keep``: the hold a stashed answer names, which this run settles (freed first, its money
    would be free for others until the settle charged the budgets past their limit).

    While a dead run's attempt is unsettled (sent, or charged and not settled) none goes back:
    the provider may bill it, and a hold freed here could be reserved by another request
    before this run's own covers the attempt, then both spent past the limit (the governor's
    rule, ``scheduler.governor.release_expired``). This run then holds the largest of them in
    place of the message's, when that one is no longer open; the others expire once settled.
    Returns the reservation to hold instead of the message's (None: the message's)."""
    if rt.admission is None:
        return None
    from sqlalchemy import select

    from models.db.attempts import AttemptRow
    from models.db.budgets import ReservationRow

    req = env.request
    try:
        with rt.session() as s:
            held = s.execute(select(ReservationRow.id, ReservationRow.amount).where(
                ReservationRow.request_id == req.request_id,
                ReservationRow.owner == f"{req.org}/{req.team}",
                ReservationRow.state == "open")).all()
            in_flight = s.scalar(select(AttemptRow.id).where(
                AttemptRow.request_id == req.request_id, AttemptRow.org == req.org,
                AttemptRow.team == req.team, AttemptRow.settled.is_(False)).limit(1))
        mine = {i for i in (env.reservation_id, keep) if i}
        left = [(rid, amount) for rid, amount in held if rid not in mine]
        if in_flight is not None:
            if not left or any(rid in mine for rid, _ in held):
                return None  # this run holds one already; the rest expire once settled
            return max(left, key=lambda r: r[1])[0]
        for rid, _amount in left:
            rt.admission.release(rid)
    except Exception as exc:  # noqa: BLE001 - they expire; the governor frees them then
        log.warning("could not release what dead runs of %s held: %s", req.request_id, exc)
    return None


def retrying(stash: AnswerStash | None) -> None:
    """This run retries an errored request (the caller's retry under the same id): the failed
    run's stored error is set aside so this run's reply is stored (workers.tasks._Stash)."""
    set_aside = getattr(stash, "set_aside_error", None)
    if set_aside is not None:
        set_aside()


def keep(stash: AnswerStash | None, reply: dict[str, Any], env: Envelope,
          final: dict[str, Any] | None) -> None:
    """Stash the answer, the reservation it settles and its attempt, ahead of the ledger write,
    with the reply to the caller (best effort: the ledger write must happen either way; an
    answer not pushed here is stored by Celery when the task returns)."""
    if stash is None:
        return
    try:
        stash.keep({"reply": reply, "reservation_id": env.reservation_id, "attempt": final})
    except Exception as exc:  # noqa: BLE001 - the ledger write must still happen
        log.warning("could not keep the answer of %s before billing it: %s",
                    env.request.request_id, exc)


def kept(stash: AnswerStash | None
          ) -> tuple[dict[str, Any], str | None, dict[str, Any] | None] | None:
    """The answer, its reservation id and its attempt an earlier run of this task stashed."""
    record = (stash.read() if stash is not None else None) or {}
    reply, rid, final = record.get("reply"), record.get("reservation_id"), record.get("attempt")
    if not (isinstance(reply, dict) and reply.get("ok")):
        return None
    return reply, rid if isinstance(rid, str) else None, final if isinstance(final, dict) else None


#: What ``previous()`` reads when a caller's retry set the failed run's stored error aside
#: (queues/retried_results.py): the retry's run will store the reply its caller waits for.
SET_ASIDE = object()


class Superseded(SluiceError):
    """A copy of a failed run's message whose caller has retried: it stores no reply (the
    task layer ignores it), so the retry's is the one read under the task id."""

    code = "superseded"


def superseded(request_id: str) -> dict[str, Any]:
    """The reply of a copy that must store nothing (the task raises Celery's Ignore)."""
    return error_reply(request_id, Superseded(
        f"request {request_id}: a copy of a failed run's message, whose caller retried it; "
        "the retry answers", request_id=request_id))


class ClaimBusy(SluiceError):
    """Another run holds this request's claim; the task retries once the claim could expire."""

    code = "claim_busy"
    retryable = True


def duplicate(request_id: str, state: str, previous: Any, stash: AnswerStash | None,
              retry_in: float = 60.0, retries: int = 3) -> dict[str, Any]:
    """The reply of a delivery that found the request done elsewhere or a live claim on it."""
    if state == "done":
        earlier = previous() if callable(previous) else previous
        if isinstance(earlier, dict) and earlier.get("ok"):
            return earlier
        # The run that billed it died before its reply was stored: the stash still has it.
        found = kept(stash)
        if found is not None:
            return found[0]
    if state == "ended":
        # A copy of the message of a run that failed: its caller was told; it is not re-run.
        earlier = previous() if callable(previous) else previous
        if earlier is SET_ASIDE:  # the caller retried: the retry's run stores the reply
            return superseded(request_id)
        if isinstance(earlier, dict):
            return earlier
        return error_reply(request_id, ResultLost(
            f"request {request_id} ended in an error in an earlier run of this same message; "
            "it was not sent again; submit it again to retry it", request_id=request_id))
    if state == "running":
        return error_reply(request_id, ClaimBusy(
            f"request {request_id} is being executed by another run (or by a worker that "
            "died: its claim lapses when its heartbeat stops); wait for its handle",
            request_id=request_id, retry_in=retry_in, retries=retries))
    return error_reply(request_id, ResultLost(
        f"request {request_id} was completed and billed by an earlier run, but its answer was "
        "not kept (the worker stopped before storing it); submit it again with a new request_id",
        request_id=request_id))
