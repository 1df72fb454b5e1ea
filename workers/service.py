"""Execute one queued request: claim, call the provider once per policy, price, record, settle."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import pydantic
from sqlalchemy.exc import SQLAlchemyError

from models.db import attempts as attempt_rows
from models.db import ledger, stored_text
from models.domain.charges import reach_worst_case
from models.domain.cost import baseline_cost, cost_of, list_cost, prompt_for
from models.domain.deployments import deployment_name
from models.domain.errors import (BatchPending, Cancelled, DeadlineExceeded, LedgerError,
                                  SluiceError, ValidationError)
from models.domain.prefix_audit import volatile_in_static
from models.domain.request import ChatRequest
from models.domain.result import ChatResult, Route, Timings
from models.domain.usage import Usage
from queues.envelope import Envelope, error_reply, ok_reply, task_id_for
from workers.attempts import RunMoney, finalize, record_answer
from workers.batch.seam import batch_state, hold_pending, waiting_in_batch
from workers.heartbeat import Beat
from workers.outbox import final_write, outbox_of
from workers.redelivery import (AnswerStash, duplicate, keep, kept, release_copy,
                                release_dead_runs, retrying)
from workers.provider_chain import call_chain, model_chain
from workers.runtime import WorkerRuntime
from workers.shadow import after_answer

log = logging.getLogger(__name__)


def execute(message: Any, rt: WorkerRuntime, *, previous: Any = None,
            stash: AnswerStash | None = None) -> dict[str, Any]:
    """Run the request in ``message`` and return the task reply (never raises a SluiceError).

    ``previous`` is the result a prior run of the same task stored, if any: a redelivered task
    returns it instead of calling the provider (and paying) a second time. ``stash`` keeps each
    answer before its ledger write, so a worker killed between the two leaves an answer the
    redelivered task bills instead of buying again, and one killed after the ledger write but
    before its reply was stored leaves an answer the redelivery can still return.
    """
    started = time.time()
    try:
        env = Envelope.model_validate(message)
    except pydantic.ValidationError as exc:
        request = message.get("request") if isinstance(message, dict) else None
        rid = str(request.get("request_id", "?")) if isinstance(request, dict) else "?"
        return error_reply(rid, ValidationError(f"undecodable task message: {exc.errors()[0]}",
                                                field="message"))
    req, route = env.request, env.route
    base_row = _row(env, route, outcome="running")
    outbox_of(rt).maybe_replay(rt)  # rows kept while the database was away land first
    heart = rt.heartbeat()
    try:
        state = rt.claim(base_row, lease_s=rt.settings.lanes.get(req.lane).time_limit_s,
                         sent_at=env.enqueued_at)
    except (LedgerError, SQLAlchemyError) as exc:
        # Nothing was sent or paid yet: refuse with a retryable, typed error.
        return error_reply(req.request_id, LedgerError(
            f"request {req.request_id} was not run: the ledger database is unreachable "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); nothing was "
            "sent to a provider; retry once the database is back", request_id=req.request_id))
    if state == "foreign":
        release_copy(rt, env)
        return error_reply(req.request_id, ValidationError(
            f"request_id {req.request_id!r} was already used by another team; request ids "
            "must be unique: use a fresh one (a UUID)", field="request_id"))
    # Seam (workers/batch): a task back to poll its pending provider batch owns its claim.
    state = batch_state(rt, req, state)
    if state not in ("claimed", "resumed", "retried", "polling"):
        if state in ("done", "ended"):
            # A retry of a finished request, or a copy of a failed one's message: whatever it
            # reserved goes back at once.
            release_copy(rt, env)
        # A live claim renews its heartbeat: come back when it would have lapsed, were its
        # worker dead, and wait as long as a live run can take.
        lane = rt.settings.lanes.get(req.lane)
        ttl = max(heart.claim_ttl_s, 0.5)
        return duplicate(req.request_id, state, previous, stash, retry_in=ttl,
                          retries=int(lane.soft_time_limit_s // ttl) + 3)
    if state == "retried":
        retrying(stash)
    elif state == "resumed":
        found = kept(stash)
        adopted = release_dead_runs(rt, env, keep=found[1] if found is not None else None)
        if adopted is not None:  # the hold a dead run's unsettled attempt was sent under
            env = env.model_copy(update={"reservation_id": adopted})
    beat = heart.hold(req.request_id, req.lane, env.reservation_id)
    try:
        return _run(rt, env, state, stash, started, beat)
    finally:
        heart.drop(beat)


def _run(rt: WorkerRuntime, env: Envelope, state: str, stash: AnswerStash | None,
         started: float, beat: Beat) -> dict[str, Any]:
    """The claimed part of a run: the heartbeat keeps its claim and reservation alive."""
    req, route = env.request, env.route
    if state in ("resumed", "polling"):
        # We took over the claim of a run that died. If it had answered before dying, its
        # answer is in the stash: bill that answer (and the reservation that run held) rather
        # than pay the provider again.
        found = kept(stash)
        if found is not None:
            kept_reply, rid, final = found
            result = ChatResult.model_validate(kept_reply["result"])
            if final is None:
                # Stashed by a worker of the previous release: no attempt row names it.
                final = record_answer(rt, env, result, batch=bool(kept_reply.get("batch")))
            _bill(rt, env, result, batch=bool(kept_reply.get("batch")), reservation_id=rid,
                  final=final)
            _store_in_cache(rt, env.request, result)
            return kept_reply
    # A resumed run is never dropped: the dead run it takes over may have paid already (a
    # provider batch placed).
    dropped = None if state in ("resumed", "polling") else _not_wanted(rt, env, started)
    if dropped is not None:
        # Nobody waits for the answer: the row says why ($0), the reservation goes back.
        _fail(rt, env, dropped)
        return error_reply(req.request_id, dropped)
    money: RunMoney | None = None
    try:
        # A poll of a pending batch: its reservation is held since its first visit; a run
        # taking over a dead one whose request waits in its batch too: the provider has the
        # money committed, and a refusal now would leave the batch billed outside the ledger.
        in_batch = state == "polling" or (state == "resumed" and waiting_in_batch(rt, req))
        env, held = (env, Decimal(0)) if in_batch else _second_check(rt, env)
        beat.reservation_id = env.reservation_id
        money = RunMoney(rt, env, started=started, held=held)
        money.spent = _owed_before(rt, env, money, state)
        money.on_reservation = lambda rid: setattr(beat, "reservation_id", rid)
        reply, model = call_chain(rt, money, polling=state == "polling")
        env = money.env
    except BatchPending as pending:  # still in its provider batch: the task comes back
        beat.reservation_id = None  # held for the batch's life from here, not renewed
        return hold_pending(rt, money.env if money is not None else env, pending)
    except SluiceError as err:
        _fail(rt, money.env if money is not None else env, err,
              deployment=money.last_deployment if money is not None else "")
        return error_reply(req.request_id, err)
    finished = time.time()
    # An answer from a provider Batch API (workers/batch) is billed at the batch discount.
    batch = bool(reply.extra.get("batch"))
    cost = cost_of(reply.usage, model, batch=batch)
    rt.health().add_spend(model, cost)  # a deployment's own budget (only one that has it)
    final = money.final_values(cost, reply.usage.input_total, reply.usage.output, batch)
    result = ChatResult(
        request_id=req.request_id, text=reply.text, provider=model.provider, model=model.name,
        deployment=deployment_name(model),
        route=route if model.name == route.model else route.model_copy(
            update={"model": model.name, "provider": model.provider, "rung": None,
                    "reason": f"{route.reason}; fallback to {model.name}"}),
        usage=reply.usage, cost=cost + money.spent,
        baseline_cost=baseline_cost(reply.usage, rt.baseline),
        list_cost=list_cost(reply.usage, model),
        finish_reason=reply.finish_reason, price_version=rt.catalogue.version,
        tool_calls=reply.tool_calls, logprobs=reply.logprobs, reasoning=reply.reasoning,
        stop_sequence=reply.stop_sequence, thinking=reply.thinking,
        timings=Timings(queued_ms=max(started - env.enqueued_at, 0) * 1000,
                        provider_ms=(finished - started) * 1000,
                        total_ms=max(finished - env.enqueued_at, 0) * 1000))
    answer = ok_reply(result)
    if batch:
        answer["batch"] = True  # so a run that adopts this answer bills it at the batch price
    # Before the reply: an identical request its caller sends on the answer finds the entry.
    _store_in_cache(rt, req, result)
    # The stash and the reply in one Redis step, ahead of the ledger write (ARCHITECTURE.md,
    # change 12): the caller has its answer while the row is billed; a worker killed before
    # the COMMIT leaves the stash, and its redelivery bills it (the reservation holds the
    # worst case until then, so no budget is passed meanwhile).
    keep(stash, answer, env, final)
    _bill(rt, env, result, batch=batch, reservation_id=env.reservation_id, final=final)
    # The quality guard: shadow this answer, or judge this shadow (off the caller's path:
    # the answer is billed; what follows goes to the async lane).
    after_answer(rt, env, result)
    return answer


def _owed_before(rt: WorkerRuntime, env: Envelope, money: RunMoney, state: str) -> Decimal:
    """What earlier runs of this request were charged and not yet settled (a dead run's
    attempts, charged at their worst case now): the reservation must cover it too."""
    if state != "resumed":
        return Decimal(0)
    try:
        with rt.session() as s:
            attempt_rows.charge_lost(s, env.request.request_id, not_run=money.run)
            return attempt_rows.unsettled(s, env.request.request_id)
    except SQLAlchemyError as exc:
        raise LedgerError(f"request {env.request.request_id}: could not read what earlier runs "
                          "were charged; nothing was sent; retry once the database is back",
                          request_id=env.request.request_id) from exc


def _bill(rt: WorkerRuntime, env: Envelope, result: ChatResult, *, batch: bool,
          reservation_id: str | None, final: dict[str, Any] | None) -> None:
    """Finish the claimed ledger row with ``result`` (its cost: the sum of the request's
    attempts) and settle ``reservation_id``, once."""
    req = env.request
    row = ledger.row_from_result(req, result, prompt_hash=env.prompt_hash, batch=batch)
    row.pop("created_at")
    row["volatile_prefix"] = _volatile_prefix(req)
    # The provider was paid: if the database is away, the row waits in the outbox (on the
    # worker's volume: a resend by the sweeper could pay the provider again once the answer's
    # stash has expired, so the in-flight record goes either way).
    with final_write(rt, "ok", row, reservation_id, final) as s:
        first = finalize(s, rt, "ok", row, reservation_id, final)
        if first:
            # Text only for features that opted in (SLUICE_PRIVACY__STORE_TEXT_FEATURES).
            stored_text.store_if_opted(s, rt.settings.privacy, req, result.text)
    _forget(rt, req)


def _store_in_cache(rt: WorkerRuntime, req: ChatRequest, result: ChatResult) -> None:
    """The answer into the response cache (a no-op without one, or for a request that opted
    out: the cache decides)."""
    if rt.cache is None:
        return
    try:
        rt.cache.store(req, result)
    except Exception as exc:  # noqa: BLE001 - it runs before the ledger write: never sink it
        # The cache fails open on its store's errors only; an answer it cannot encode (a lone
        # surrogate in the text) must still be stashed, answered and billed.
        log.warning("could not cache the answer of %s: %s", req.request_id, exc)


def _forget(rt: WorkerRuntime, req: ChatRequest) -> None:
    """The ledger row is final: the in-flight record may go (best effort; the sweeper also
    forgets finished messages it finds)."""
    if rt.inflight is None:
        return
    try:
        rt.inflight.done(task_id_for(req))
    except Exception as exc:  # noqa: BLE001 - a stale record only costs the sweeper a lookup
        log.debug("could not forget in-flight %s: %s", req.request_id, exc)


def _not_wanted(rt: WorkerRuntime, env: Envelope, started: float) -> SluiceError | None:
    """Why this request must not be sent at all: its caller stopped waiting (the deadline) or
    cancelled it; None when it is still wanted."""
    req, queue = env.request, env.route.queue
    if env.deadline is not None and started > env.deadline:
        return DeadlineExceeded(
            f"request {req.request_id} waited {started - env.enqueued_at:.1f} s in queue "
            f"{queue}, past its deadline; it was not sent to a provider and costs nothing. "
            "Workers are behind: add workers, or retry later",
            request_id=req.request_id, queue=queue,
            waited_ms=round((started - env.enqueued_at) * 1000, 1))
    if _cancelled(rt, req):
        return Cancelled(f"request {req.request_id} was cancelled by its caller before a "
                         "worker started it; it was not sent to a provider and costs nothing",
                         request_id=req.request_id)
    return None


def _cancelled(rt: WorkerRuntime, req: ChatRequest) -> bool:
    """Did the caller cancel this async request? (Interactive ones are not looked up: their
    callers hang up instead, and the read would cost every request a Redis round trip.)"""
    if req.lane != "async" or rt.cancels is None:
        return False
    try:
        return bool(rt.cancels.marked(task_id_for(req)))
    except Exception as exc:  # noqa: BLE001 - an unreadable mark must not stop paid-for work
        log.warning("could not read the cancel mark of %s (running it): %s", req.request_id, exc)
        return False


def _second_check(rt: WorkerRuntime, env: Envelope) -> tuple[Envelope, Decimal]:
    """Refuse before paying when the queue was paused or the budgets, as they are now, do not
    hold the worst case of the dearest model the request can reach; returns the envelope (its
    reservation id may change) and the amount held."""
    chain = model_chain(rt, env)
    amount = reach_worst_case(prompt_for(env.request, chain, env.prompt_tokens),
                              env.request.max_tokens, chain)
    if rt.admission is None:
        return env, amount
    rid = rt.admission.confirm(env.request, env.route, env.reservation_id, amount)
    held = amount if rid is not None else Decimal(0)
    env = env if rid == env.reservation_id else env.model_copy(update={"reservation_id": rid})
    return env, held


def _row(env: Envelope, route: Route, *, outcome: str) -> dict[str, Any]:
    req = env.request
    result = ChatResult(request_id=req.request_id, text="", provider=route.provider,
                        model=route.model, route=route, usage=Usage())
    row = ledger.row_from_result(req, result, outcome=outcome, prompt_hash=env.prompt_hash)
    row["price_version"] = ""
    return row


_WARNED: dict[str, float] = {}


def _volatile_prefix(req: ChatRequest) -> bool:
    """Flag (and log, at most every 10 minutes per feature) volatile content in the prefix."""
    fired = volatile_in_static(req.static)
    if fired:
        now = time.monotonic()
        if now - _WARNED.get(req.feature, -1e9) > 600:
            _WARNED[req.feature] = now
            log.warning("feature %s sends volatile content in its static prompt (%s): the "
                        "prefix changes on every request and cannot be cached; move it to the "
                        "messages", req.feature, ", ".join(sorted(fired)))
    return bool(fired)


def _fail(rt: WorkerRuntime, env: Envelope, err: SluiceError, *, deployment: str = "") -> None:
    """End the request in an error: its row costs what its attempts were charged (estimates
    for those the provider may have billed), settled; with nothing charged, released. The
    row names the deployment last tried (its attempts name each one)."""
    row = _row(env, env.route, outcome="error")
    row.pop("created_at")
    row["error_code"] = err.code
    row["deployment"] = deployment
    with final_write(rt, "error", row, env.reservation_id, None) as s:
        finalize(s, rt, "error", row, env.reservation_id, None)
    _forget(rt, env.request)
