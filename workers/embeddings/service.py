"""Execute one queued embedding request on the chat path's money rules: claim, second check,
each provider call an admitted attempt row, exact settlement, then the item cache."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import pydantic
from sqlalchemy.exc import SQLAlchemyError

from models.db import attempts as attempt_rows
from models.db.embedding_rows import embedding_row
from models.domain.catalogue import ModelSpec
from models.domain.tokens import PromptCount
from models.domain.cost import cost_of, list_cost, worst_case_cost
from models.domain.embedding import EmbeddingResult, Item
from models.domain.embedding_pack import chunks
from models.domain.errors import (BatchPending, Cancelled, DeadlineExceeded, LedgerError,
                                  ProviderRetryable, SluiceError, ValidationError)
from models.domain.result import Timings
from models.domain.usage import Usage
from queues.embedding_cache import item_cache_for
from queues.embedding_envelope import EmbeddingEnvelope
from queues.envelope import error_reply, task_id_for
from workers.attempts import RunMoney, finalize
from workers.batch.seam import hold_pending
from workers.embeddings import batch_visits as visits
from workers.embeddings.adapters import embedding_provider
from workers.embeddings.batch import batch_api, wants_batch
from workers.embeddings.packer import Member, Packer
from workers.outbox import final_write
from workers.providers.retry import with_retries
from workers.runtime import WorkerRuntime
from workers.redelivery import (SET_ASIDE, AnswerStash, ClaimBusy, ResultLost,
                                release_dead_runs, retrying, superseded)

log = logging.getLogger(__name__)


def execute_embedding(message: Any, rt: WorkerRuntime, *, previous: Any = None,
                      stash: AnswerStash | None = None) -> dict[str, Any]:
    """Run the embedding request in ``message``; returns the task reply (never raises ours).

    ``stash`` keeps each answer before its ledger write (as the chat path does): a run that
    takes over a dead one's claim bills the answer it left instead of buying it again.
    """
    started = time.time()
    try:
        env = EmbeddingEnvelope.model_validate(message)
    except pydantic.ValidationError as exc:
        return error_reply("?", ValidationError(f"undecodable embedding message: "
                                                f"{exc.errors()[0]}", field="message"))
    req, route = env.request, env.route
    lane = rt.settings.lanes.get(req.lane)
    heart = rt.heartbeat()
    try:
        state = rt.claim(embedding_row(req, route, outcome="running", items=len(req.inputs)),
                         lease_s=lane.time_limit_s, sent_at=env.enqueued_at)
    except (LedgerError, SQLAlchemyError) as exc:
        return error_reply(req.request_id, LedgerError(
            f"embedding request {req.request_id} was not run: the ledger database is "
            f"unreachable ({type(exc).__name__}); nothing was sent; retry once it is back",
            request_id=req.request_id))
    if state == "foreign":
        return error_reply(req.request_id, ValidationError(
            f"request_id {req.request_id!r} was already used by another team; use a fresh one",
            field="request_id"))
    if state == "done":
        earlier = previous() if callable(previous) else previous
        if isinstance(earlier, dict) and earlier.get("ok"):
            return earlier
        kept = _kept(stash)
        if kept is not None:  # billed by a run that died before its reply was stored
            return kept["reply"]
        return error_reply(req.request_id, ResultLost(
            f"request {req.request_id} was embedded and billed by an earlier run whose answer "
            "was not kept; submit it again with a new request_id", request_id=req.request_id))
    if state == "ended":
        # A copy of the message of a run that failed: its caller was told; not re-run.
        earlier = previous() if callable(previous) else previous
        if earlier is SET_ASIDE:  # the caller retried: the retry's run stores the reply
            return superseded(req.request_id)
        if isinstance(earlier, dict):
            return earlier
        return error_reply(req.request_id, ResultLost(
            f"embedding request {req.request_id} ended in an error in an earlier run of this "
            "same message; it was not sent again; submit it again to retry it",
            request_id=req.request_id))
    if state == "running" and _waiting_in_batch(rt, env):
        # Back to poll its provider batch: the live claim is its own (the visit that placed
        # it returned BatchPending), and the provider has the money committed.
        state = "polling"
    if state == "running":
        ttl = max(heart.claim_ttl_s, 0.5)
        return error_reply(req.request_id, ClaimBusy(
            f"request {req.request_id} is being embedded by another run; wait for its handle",
            request_id=req.request_id, retry_in=ttl,
            retries=int(lane.soft_time_limit_s // ttl) + 3))
    if state == "retried":
        retrying(stash)
    elif state == "resumed":
        # The hold a stashed answer names is this run's to settle, as on the chat path.
        found = _kept(stash)
        adopted = release_dead_runs(rt, env, keep=(found or {}).get("reservation_id"))
        if adopted is not None:  # the hold a dead run's unsettled attempt was sent under
            env = env.model_copy(update={"reservation_id": adopted})
    beat = heart.hold(req.request_id, req.lane, env.reservation_id)
    try:
        return _run(rt, env, state, started, beat, stash)
    finally:
        heart.drop(beat)


def _run(rt: WorkerRuntime, env: EmbeddingEnvelope, state: str, started: float,
         beat: Any, stash: AnswerStash | None = None) -> dict[str, Any]:
    req, route = env.request, env.route
    model = rt.catalogue.get(route.model)
    kept = _kept(stash) if state == "resumed" else None
    if kept is not None:
        # The dead run had its answer and stashed it: bill that (and the reservation it
        # held) rather than pay the provider again.
        result = EmbeddingResult.model_validate(kept["reply"]["result"])
        _bill(rt, env, result, kept.get("reservation_id"), kept.get("attempt"), model)
        return dict(kept["reply"])
    if state not in ("resumed", "polling") and env.deadline is not None \
            and started > env.deadline:
        err: SluiceError = DeadlineExceeded(
            f"embedding request {req.request_id} waited {started - env.enqueued_at:.1f} s in "
            f"queue {route.queue}, past its deadline; nothing was sent and it costs nothing",
            request_id=req.request_id, queue=route.queue)
        _fail(rt, env, err)
        return error_reply(req.request_id, err)
    money: RunMoney | None = None
    try:
        amount = worst_case_cost(PromptCount(tokens=env.prompt_tokens), 0, model)
        held = Decimal(0)
        # A poll of a pending batch: its reservation is held since its first visit; so is a
        # takeover of a dead run whose pack waits in its batch (refused now, the batch would
        # run on and bill outside the ledger).
        in_batch = state == "polling" or (state == "resumed" and _waiting_in_batch(rt, env))
        if rt.admission is not None and not in_batch:
            rid = rt.admission.confirm(req, route, env.reservation_id, amount)  # type: ignore[arg-type]
            held = amount if rid is not None else Decimal(0)
            if rid != env.reservation_id:
                env = env.model_copy(update={"reservation_id": rid})
        beat.reservation_id = env.reservation_id
        money = RunMoney(rt, env, started=started, held=held)  # type: ignore[arg-type]
        money.on_reservation = lambda rid: setattr(beat, "reservation_id", rid)
        # Chunks an earlier run placed in a provider batch are taken up, not charged as lost.
        taken = (visits.take_up(rt, env, model, money.run, dead=state == "resumed")
                 if state in ("resumed", "polling") else {})
        if state == "resumed":
            money.spent = _owed_before(rt, req.request_id, money.run)
        vectors, tokens, members, _paid = _embed(rt, money, env, model, taken)
        env = money.env  # type: ignore[assignment]
    except BatchPending as pending:  # still in its provider batch: the task comes back
        beat.reservation_id = None  # held for the batch's life from here, not renewed
        return hold_pending(rt, money.env if money is not None else env,  # type: ignore[arg-type]
                            pending)
    except SluiceError as exc:
        _fail(rt, money.env if money is not None else env, exc)  # type: ignore[arg-type]
        return error_reply(req.request_id, exc)
    finished = time.time()
    usage = Usage(input_uncached=tokens)
    listed = list_cost(usage, model)
    result = EmbeddingResult(
        request_id=req.request_id, model=model.name, provider=model.provider, route=route,
        vectors=tuple(vectors), prompt_tokens=tokens, total_tokens=tokens,
        # Every call's own tokens at the price (as its attempt row says), and what failed
        # attempts were charged: what the run spent.
        items=len(req.inputs), cost=money.spent, baseline_cost=listed, list_cost=listed,
        price_version=rt.catalogue.version, batch=wants_batch(req, model.provider, rt.settings),
        timings=Timings(queued_ms=max(started - env.enqueued_at, 0) * 1000,
                        provider_ms=(finished - started) * 1000,
                        total_ms=max(finished - env.enqueued_at, 0) * 1000))
    final = _final(money)
    reply: dict[str, Any] = {"ok": True, "result": result.model_dump(mode="json")}
    if members > 1:
        reply["packed_with"] = members - 1
    if stash is not None:
        try:
            stash.keep({"reply": reply, "reservation_id": env.reservation_id,
                        "attempt": final})
        except Exception as exc:  # noqa: BLE001 - the ledger write must happen either way
            log.warning("could not keep the answer of %s before billing it: %s",
                        req.request_id, exc)
    _bill(rt, env, result, env.reservation_id, final, model)
    return reply


def _bill(rt: WorkerRuntime, env: EmbeddingEnvelope, result: EmbeddingResult,
          reservation_id: str | None, final: dict[str, Any] | None, model: ModelSpec) -> None:
    """Finish the claimed row (its cost: the sum of its attempts), settle, fill the cache."""
    req = env.request
    row = embedding_row(req, env.route, outcome="ok", items=len(req.inputs),
                        tokens=result.prompt_tokens, baseline_cost=result.baseline_cost,
                        list_cost=result.list_cost, price_version=rt.catalogue.version,
                        timings=result.timings, batch=result.batch)
    row.pop("created_at")
    with final_write(rt, "ok", row, reservation_id, final) as s:
        finalize(s, rt, "ok", row, reservation_id, final)
    _forget(rt, env)
    _store(rt, env, model, list(result.vectors))


def _kept(stash: AnswerStash | None) -> dict[str, Any] | None:
    """What an earlier run of this task stashed: ``{reply, reservation_id, attempt}``."""
    record = (stash.read() if stash is not None else None) or {}
    reply = record.get("reply")
    return record if isinstance(reply, dict) and reply.get("ok") else None


def _embed(rt: WorkerRuntime, money: RunMoney, env: EmbeddingEnvelope, model: ModelSpec,
           taken: dict[int, visits.Taken] | None = None
           ) -> tuple[list[str], int, int, Decimal]:
    """Every item's vector, in order, and the tokens billed: one attempt per provider call
    (calls cut at the model's limits), shared with other requests when the lane packs; a call
    an earlier run placed in a provider batch (``taken``) is collected from that batch."""
    req = env.request
    limits = model.embedding
    assert limits is not None
    batch = wants_batch(req, model.provider, rt.settings)
    provider = (batch_api if batch else embedding_provider)(rt, model.provider)
    dims = req.dimensions
    packer = _packer(rt, req.lane, batch)
    taken = taken or {}
    vectors: list[str] = []
    billed, most, paid = 0, 1, Decimal(0)
    attempts: list[dict[str, Any]] = []
    for c, part in enumerate(chunks(env.item_tokens, limits.max_items, limits.max_call_tokens)):
        items: list[Item] = [req.inputs[i] for i in part]
        counted = sum(env.item_tokens[i] for i in part)
        # The attempt's worst case is this call's tokens, not the whole request's.
        money.env = money.env.model_copy(update={"prompt_tokens": counted})
        key = visits.place_key(env, c)
        #: Set when the provider reported no count for this call (ours is billed, estimated).
        guessed = [False]

        def send(left: float, items: list[Item] = items, counted: int = counted,
                 key: str = key, guessed: list[bool] = guessed) -> Any:
            def call(all_items: list[Item], members: list[Any]) -> Any:
                if not batch:
                    return provider.embed(model, all_items, dims, timeout_s=left)
                # ``members`` is call()'s own argument, not the loop's
                return visits.send_pack(rt, provider, model, all_items,
                                        members, dims, left)  # noqa: B023
            if packer is None:
                reply = call(items, [Member(0, len(items), counted, key, money.current)])
                guessed[0] = not reply.exact
                return reply.vectors, reply.prompt_tokens, 1
            share = packer.share(model, dims, items, counted, call, left, place=key,
                                 attempt_id=money.current)
            guessed[0] = not share.exact
            return share.vectors, share.tokens, share.members

        try:
            got, tokens, members = _call(money, model, send, taken.get(c), provider, batch, guessed)
        except BatchPending:
            # This visit's collected chunks wait, pending, with the one still in its batch.
            visits.pend(rt, [int(a["attempt_id"]) for a in attempts])
            raise
        vectors.extend(got)
        billed += tokens
        own = cost_of(Usage(input_uncached=tokens), model, batch=batch)
        paid += own
        # Spent: the next call is admitted on top of it (the reservation must cover both).
        money.spent += own
        most = max(most, members)
        if money.final is not None:
            attempts.append({**money.final, "tokens": tokens,
                             "billing": "estimated" if guessed[0] else "exact"})
            money.final = None
    money.env = money.env.model_copy(update={"prompt_tokens": env.prompt_tokens})
    # Every call but the last is ended now, exactly; the last one ends with the ledger row.
    for done in attempts[:-1]:
        with rt.session() as s:
            attempt_rows.end(s, int(done["attempt_id"]), outcome="ok",
                             billing=done.get("billing", "exact"),
                             cost=cost_of(Usage(input_uncached=done["tokens"]), model,
                                          batch=batch), input_tokens=done["tokens"])
    if attempts:
        money.final = {**attempts[-1], "batch": batch}
    return vectors, billed, most, paid


def _call(money: RunMoney, model: ModelSpec, send: Any, taken: visits.Taken | None,
          provider: Any, batch: bool, guessed: list[bool]) -> tuple[list[str], int, int]:
    """One chunk: sent (packed) as an admitted attempt, or collected from the batch an earlier
    run placed it in, under the attempt that run wrote (already billed: under none)."""
    rt = money.rt
    if taken is None:
        return with_retries(lambda: money.attempt(model, send, batch=batch), rt.retry)
    place = taken.place
    if taken.attempt_id is None:
        return visits.collect(provider, place, money.remaining(), guessed)
    first = [True]
    # A caller who cancelled counts towards cancelling the pack's batch at the provider.
    cancelled = visits.cancel_if_asked(rt, money.env, place, provider)  # type: ignore[arg-type]

    def collect(left: float) -> tuple[list[str], int, int]:
        try:
            return visits.collect(provider, place, left, guessed)
        except ProviderRetryable as err:
            if not cancelled:
                raise
            # Its batch ended without its vectors (cancelled before the provider embedded
            # the pack): nothing was billed, and nothing is sent again.
            raise Cancelled(
                f"embedding request {money.env.request.request_id} was cancelled by its caller "
                "while it waited in a provider batch; the batch was cancelled before the "
                "provider embedded it, so it costs nothing",
                request_id=money.env.request.request_id) from err

    def once() -> Any:
        if first[0]:
            first[0] = False
            return money.attempt(model, collect, batch=True, pending=taken.attempt_id)
        # The placed batch failed (the provider bills nothing of it): a new call.
        return money.attempt(model, send, batch=batch)

    return with_retries(once, rt.retry)


def _waiting_in_batch(rt: WorkerRuntime, env: EmbeddingEnvelope) -> bool:
    """Is this task back to poll a provider batch a visit of it placed its items in?"""
    if not wants_batch(env.request, env.route.provider, rt.settings):
        return False
    return bool(visits.placed(rt, env, rt.catalogue.get(env.route.model)))


def _final(money: RunMoney) -> dict[str, Any] | None:
    """The last call's end, written with the ledger row (its own tokens' cost)."""
    last = money.final
    if last is None:
        return None
    model = money.rt.catalogue.get(money.env.route.model)
    batch = bool(last.get("batch"))
    own = cost_of(Usage(input_uncached=int(last["tokens"])), model, batch=batch)
    return {"attempt_id": last["attempt_id"], "cost": str(own),
            "input_tokens": int(last["tokens"]), "output_tokens": 0,
            "billing": last.get("billing", "exact"), "batch": batch}


def _packer(rt: WorkerRuntime, lane: str, batch: bool) -> Packer | None:
    """This process's packer for ``lane`` (Batch API packs apart), when the lane waits to
    fill batches."""
    wait_ms = rt.settings.lanes.get(lane).batch_timeout_ms
    if not rt.settings.embeddings.pack or wait_ms <= 0:
        return None
    packers: dict[str, Packer] = rt.__dict__.setdefault("_embedding_packers", {})
    key = f"{lane}:batch" if batch else lane
    if key not in packers:
        packers[key] = Packer(wait_ms / 1000.0)
    return packers[key]


def _owed_before(rt: WorkerRuntime, request_id: str, run: str) -> Decimal:
    """What a dead run's attempts were charged (at their worst case now) and not settled."""
    try:
        with rt.session() as s:
            attempt_rows.charge_lost(s, request_id, not_run=run)
            return attempt_rows.unsettled(s, request_id)
    except SQLAlchemyError as exc:
        raise LedgerError(f"request {request_id}: could not read what earlier runs were "
                          "charged; nothing was sent; retry once the database is back",
                          request_id=request_id) from exc


def _store(rt: WorkerRuntime, env: EmbeddingEnvelope, model: ModelSpec,
           vectors: list[str]) -> None:
    """Keep each paid-for vector for the next request with the same item (best effort)."""
    req = env.request
    if req.cache.mode == "bypass":
        return
    cache = rt.__dict__.get("_embedding_cache")
    if cache is None:
        cache = rt.__dict__["_embedding_cache"] = item_cache_for(rt.settings)
    if cache is None:
        return
    keys = cache.keys(req, model.name, env.dimensions, req.inputs)
    cache.put_many(dict(zip(keys, vectors)))


def _forget(rt: WorkerRuntime, env: EmbeddingEnvelope) -> None:
    if rt.inflight is None:
        return
    try:
        rt.inflight.done(task_id_for(env.request))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a stale record only costs the sweeper a lookup
        log.debug("could not forget in-flight %s: %s", env.request.request_id, exc)


def _fail(rt: WorkerRuntime, env: EmbeddingEnvelope, err: SluiceError) -> None:
    """End in an error: the row costs what its attempts were charged, settled or released."""
    row = embedding_row(env.request, env.route, outcome="error", items=len(env.request.inputs),
                        error_code=err.code)
    row.pop("created_at")
    with final_write(rt, "error", row, env.reservation_id, None) as s:
        finalize(s, rt, "error", row, env.reservation_id, None)
    _forget(rt, env)
