"""Execute one queued request: claim, call the provider once per policy, price, record, settle."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import pydantic
from sqlalchemy.exc import SQLAlchemyError

from models.db import ledger, stored_text
from models.domain.catalogue import ModelSpec
from models.domain.cost import baseline_cost, cost_of, list_cost, request_worst_case
from models.domain.errors import (Cancelled, DeadlineExceeded, LedgerError, ProviderError,
                                  ProviderPermanent, ProviderRetryable, SluiceError,
                                  ValidationError)
from models.domain.prefix_audit import volatile_in_static
from models.domain.request import ChatRequest
from models.domain.result import ChatResult, Route, Timings
from models.domain.usage import Usage
from queues.envelope import Envelope, error_reply, ok_reply, task_id_for
from queues.token_stream import TokenWriter, token_key
from workers.batch.seam import BatchPending, batch_reply, hold_pending, waiting_in_batch
from workers.outbox import final_write, outbox_of
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.retry import with_retries
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class ResultLost(SluiceError):
    """A previous run finished this request but its answer was not kept; resubmit it anew."""

    code = "result_lost"


class AnswerStash(Protocol):
    """Where a run keeps its answer for a redelivery of the same task (workers.tasks._Stash)."""

    def keep(self, record: dict[str, Any]) -> None:
        """Keep ``{"reply": ..., "reservation_id": ...}``; may raise (the caller logs it)."""

    def read(self) -> dict[str, Any] | None:
        """What an earlier run of this task kept, if anything."""


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
    try:
        state = rt.claim(base_row, lease_s=rt.settings.lanes.get(req.lane).time_limit_s)
    except (LedgerError, SQLAlchemyError) as exc:
        # Nothing was sent or paid yet: refuse with a retryable, typed error.
        return error_reply(req.request_id, LedgerError(
            f"request {req.request_id} was not run: the ledger database is unreachable "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); nothing was "
            "sent to a provider; retry once the database is back", request_id=req.request_id))
    if state == "foreign":
        return error_reply(req.request_id, ValidationError(
            f"request_id {req.request_id!r} was already used by another team; request ids "
            "must be unique: use a fresh one (a UUID)", field="request_id"))
    # Seam (workers/batch): a task back to poll its pending provider batch owns its claim.
    polling = state == "running" and waiting_in_batch(rt, req)
    state = "resumed" if polling else state
    if state not in ("claimed", "resumed", "retried"):
        # A live claim may belong to a worker that died mid-call: retry after its lease.
        lease = rt.settings.lanes.get(req.lane).time_limit_s
        return _duplicate(req.request_id, state, previous, stash,
                          retry_in=min(lease + 1.0, 300.0))
    if state == "resumed":
        # We took over the claim of a run that died. If it had answered before dying, its
        # answer is in the stash: bill that answer (and the reservation that run held) rather
        # than pay the provider again.
        kept = _kept(stash)
        if kept is not None:
            kept_reply, rid = kept
            _bill(rt, env, ChatResult.model_validate(kept_reply["result"]),
                  batch=bool(kept_reply.get("batch")), reservation_id=rid)
            return kept_reply
    # A resumed run is never dropped: the dead run it takes over may have paid already (a
    # provider batch placed).
    dropped = None if state == "resumed" else _not_wanted(rt, env, started)
    if dropped is not None:
        # Nobody waits for the answer: the row says why ($0), the reservation goes back.
        _fail(rt, env, dropped)
        return error_reply(req.request_id, dropped)
    try:
        env = env if polling else _second_check(rt, env)  # a poll: held since its first run
        reply, model = _call(rt, env)
    except BatchPending as pending:  # still in its provider batch: the task comes back
        return hold_pending(rt, env, pending)
    except SluiceError as err:
        _fail(rt, env, err)
        return error_reply(req.request_id, err)
    finished = time.time()
    # An answer from a provider Batch API (workers/batch) is billed at the batch discount.
    batch = bool(reply.extra.get("batch"))
    cost = cost_of(reply.usage, model, batch=batch)
    result = ChatResult(
        request_id=req.request_id, text=reply.text, provider=model.provider, model=model.name,
        route=route if model.name == route.model else route.model_copy(
            update={"model": model.name, "provider": model.provider,
                    "reason": f"{route.reason}; fallback to {model.name}"}),
        usage=reply.usage, cost=cost, baseline_cost=baseline_cost(reply.usage, rt.baseline),
        list_cost=list_cost(reply.usage, model),
        finish_reason=reply.finish_reason, price_version=rt.catalogue.version,
        tool_calls=reply.tool_calls,
        timings=Timings(queued_ms=max(started - env.enqueued_at, 0) * 1000,
                        provider_ms=(finished - started) * 1000,
                        total_ms=max(finished - env.enqueued_at, 0) * 1000))
    answer = ok_reply(result)
    if batch:
        answer["batch"] = True  # so a run that adopts this answer bills it at the batch price
    _keep(stash, answer, env)
    _bill(rt, env, result, batch=batch, reservation_id=env.reservation_id)
    return answer


def _keep(stash: AnswerStash | None, reply: dict[str, Any], env: Envelope) -> None:
    """Stash the answer, and the reservation it settles, ahead of the ledger write (best
    effort: the ledger write must happen either way)."""
    if stash is None:
        return
    try:
        stash.keep({"reply": reply, "reservation_id": env.reservation_id})
    except Exception as exc:  # noqa: BLE001 - the ledger write must still happen
        log.warning("could not keep the answer of %s before billing it: %s",
                    env.request.request_id, exc)


def _kept(stash: AnswerStash | None) -> tuple[dict[str, Any], str | None] | None:
    """The answer (and its reservation id) an earlier run of this task stashed, if any."""
    record = (stash.read() if stash is not None else None) or {}
    reply, rid = record.get("reply"), record.get("reservation_id")
    if not (isinstance(reply, dict) and reply.get("ok")):
        return None
    return reply, rid if isinstance(rid, str) else None


def _bill(rt: WorkerRuntime, env: Envelope, result: ChatResult, *, batch: bool,
          reservation_id: str | None) -> None:
    """Finish the claimed ledger row with ``result`` and settle ``reservation_id``, once."""
    req = env.request
    row = ledger.row_from_result(req, result, prompt_hash=env.prompt_hash, batch=batch)
    row.pop("created_at")
    row["volatile_prefix"] = _volatile_prefix(req)
    # The provider was paid: if the database is away, the row waits in the outbox.
    with final_write(rt, "ok", row, reservation_id, result.cost) as s:
        first = ledger.finish(s, row)
        if first and reservation_id and rt.admission is not None:
            rt.admission.settle(reservation_id, result.cost, session=s)
        if first:
            # Text only for features that opted in (SLUICE_PRIVACY__STORE_TEXT_FEATURES).
            stored_text.store_if_opted(s, rt.settings.privacy, req, result.text)
    _forget(rt, req)
    if rt.cache is not None:
        rt.cache.store(req, result)


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


def _second_check(rt: WorkerRuntime, env: Envelope) -> Envelope:
    """Refuse before paying when the queue was paused or the budget no longer holds the money."""
    if rt.admission is None:
        return env
    amount = request_worst_case(env.request, rt.catalogue.get(env.route.model),
                                env.prompt_tokens)
    rid = rt.admission.confirm(env.request, env.route, env.reservation_id, amount)
    return env if rid == env.reservation_id else env.model_copy(update={"reservation_id": rid})


def _call(rt: WorkerRuntime, env: Envelope) -> tuple[ProviderReply, ModelSpec]:
    """One provider call under our retry policy, then each configured fallback in turn."""
    primary = rt.catalogue.get(env.route.model)
    chain = [primary] + [rt.catalogue.get(n)
                         for n in rt.settings.providers.fallbacks.get(primary.name, [])]
    scope = f"{env.request.org}/{env.request.team}/{env.request.feature}"
    # Seam: an async request opted into provider Batch APIs waits here for its batch to answer
    # (this process's collector gathers it with others); None means call the provider directly.
    batched = batch_reply(rt, ProviderCall(request=env.request, model=primary, cache_scope=scope,
                                           cache_ttl=rt.settings.providers.ttl_for(
                                               env.request.feature)))
    if batched is not None:
        return batched, primary
    last: ProviderError | None = None
    tokens = _writer(rt, env)
    try:
        for model in chain:
            call = ProviderCall(request=env.request, model=model, cache_scope=scope,
                                cache_ttl=rt.settings.providers.ttl_for(env.request.feature))
            provider = rt.provider(model.provider)
            try:
                return with_retries(lambda p=provider, c=call: _attempt(p, c, tokens),
                                    rt.retry), model
            except ProviderRetryable as err:
                last = err  # exhausted: try the next model in the chain
    finally:
        if tokens is not None:
            tokens.close()  # the end mark: the door stops reading and takes the result
    assert last is not None
    # Say what was tried: the caller sees the whole chain, not only the last model's status.
    tried = ", ".join(m.name for m in chain)
    raise ProviderRetryable(
        f"{last.message}; gave up after {rt.retry.max_attempts} attempts on each of {tried} "
        "(SLUICE_PROVIDERS__MAX_ATTEMPTS / __FALLBACKS); nothing was billed; retry later",
        provider=last.provider, status=last.status,
        retry_after=getattr(last, "retry_after", None), tried=tried)


def _writer(rt: WorkerRuntime, env: Envelope) -> TokenWriter | None:
    """Where a streamed request's text goes as it is generated (None: answered whole)."""
    if not env.stream or rt.tokens is None:
        return None
    return TokenWriter(rt.tokens, token_key(rt.settings.broker.key_prefix,
                                            task_id_for(env.request)))


def _attempt(provider: Any, call: ProviderCall, tokens: TokenWriter | None) -> ProviderReply:
    """One call: streamed when the caller streams and the adapter can, else whole."""
    stream = getattr(provider, "stream", None)
    if tokens is None or stream is None:
        return provider.complete(call)
    try:
        reply: ProviderReply = stream(call, tokens)
    except ProviderRetryable as err:
        if tokens.sent:
            # The caller already read part of an answer: another attempt would write a
            # second one after it. End here; nothing of this attempt is billed.
            raise ProviderPermanent(f"{err.message}; the answer broke off after it had begun "
                                    "streaming, so it was not retried: retry the request",
                                    provider=err.provider, status=err.status) from err
        raise
    finally:
        tokens.flush()  # never raises: a broken writer leaves the text to the result
    return reply


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


def _fail(rt: WorkerRuntime, env: Envelope, err: SluiceError) -> None:
    row = _row(env, env.route, outcome="error")
    row.pop("created_at")
    row["error_code"] = err.code
    with final_write(rt, "error", row, env.reservation_id, None) as s:
        first = ledger.finish(s, row)
        if first and env.reservation_id and rt.admission is not None:
            rt.admission.release(env.reservation_id, session=s)
    _forget(rt, env.request)


class ClaimBusy(SluiceError):
    """Another run holds this request's claim; the task retries once the claim could expire."""

    code = "claim_busy"
    retryable = True


def _duplicate(request_id: str, state: str, previous: Any, stash: AnswerStash | None,
               retry_in: float = 60.0) -> dict[str, Any]:
    if state == "done":
        earlier = previous() if callable(previous) else previous
        if isinstance(earlier, dict) and earlier.get("ok"):
            return earlier
        # The run that billed it died before its reply was stored: the stash still has it.
        kept = _kept(stash)
        if kept is not None:
            return kept[0]
    if state == "running":
        return error_reply(request_id, ClaimBusy(
            f"request {request_id} is being executed by another run (or by a worker that "
            "died: its claim expires after the lane's time limit); wait for its handle",
            request_id=request_id, retry_in=retry_in))
    return error_reply(request_id, ResultLost(
        f"request {request_id} was completed and billed by an earlier run, but its answer was "
        "not kept (the worker stopped before storing it); submit it again with a new request_id",
        request_id=request_id))
