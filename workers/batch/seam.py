"""Where the service hands an opted-in async request to this process's batch collector."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import update

from models.db.budgets import ReservationRow
from models.domain.errors import BatchPending, Cancelled, ConfigError, ProviderRetryable
from models.domain.request import ChatRequest
from models.domain.settings import Settings
from queues.batch_wait import cancel_asked
from queues.envelope import Envelope, error_reply, task_id_for
from workers.batch.base import BATCH_PROVIDERS, BatchAPI
from workers.batch.collector import BatchCollector
from workers.batch.pending import adopt_sent, reopen_pending
from workers.batch.placements import PLACEMENT_TTL_S, placements_for
from workers.providers.base import ProviderCall, ProviderReply
from workers.runtime import WorkerRuntime, provider_key

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
#: The request tag that opts one request in (``"true"``) or out (``"false"``).
BATCH_TAG = "batch"


def wants_batch(request: ChatRequest, provider: str, settings: Settings) -> bool:
    """Whether ``request`` goes through a provider Batch API: async lane, hosted, opted in."""
    if request.lane != "async" or provider not in BATCH_PROVIDERS:
        return False
    tag = request.tags.get(BATCH_TAG, "").strip().lower()
    if tag in ("false", "0", "no"):
        return False
    return (tag in ("true", "1", "yes") or settings.batch.enabled
            or request.feature in settings.batch.features)


def max_wait_s(settings: Settings) -> float:
    """How long a task waits for its batch (the async lane's soft limit, less a margin)."""
    if settings.batch.max_wait_s > 0:
        return settings.batch.max_wait_s
    return max(settings.lanes.get("async").soft_time_limit_s - 10.0, 1.0)


def batch_reply(rt: WorkerRuntime, call: ProviderCall) -> ProviderReply | None:
    """The batched answer to ``call``, or None when it is not batched (call directly then).

    A batch that fails retryably (expired, submission refused) also gives None: the request is
    then answered directly at the full price rather than not at all, unless its caller
    cancelled it (Cancelled, $0: the provider bills nothing for what it had not answered). A
    batch still running after :func:`max_wait_s` raises BatchPending: answering it directly
    too would pay twice, and failing it would free a reservation the provider will still bill.
    A caller that cancelled counts towards cancelling the whole batch at the provider.
    """
    if not wants_batch(call.request, call.model.provider, rt.settings):
        return None
    collector = collector_for(rt)
    key = task_id_for(call.request)
    cancelled = _cancel_if_asked(rt, collector, call.request, key)
    future = collector.submit(call, key=key)
    wait = max_wait_s(rt.settings)
    try:
        return future.result(timeout=wait)
    except FutureTimeout:
        raise BatchPending(
            f"request {call.request.request_id} is still in a {call.model.provider} batch "
            f"after {wait:.0f} s; it stays running and is polled again",
            request_id=call.request.request_id, provider=call.model.provider,
            retry_in=retry_in_s(rt.settings)) from None
    except ProviderRetryable as err:
        if cancelled:
            raise Cancelled(
                f"request {call.request.request_id} was cancelled by its caller while it "
                f"waited in a {call.model.provider} batch; the batch was cancelled at the "
                "provider, which bills nothing for requests it had not answered, so this "
                "one costs nothing", request_id=call.request.request_id) from err
        log.warning("batch failed for %s, answering directly: %s", call.request.request_id, err)
        return None


def _cancel_if_asked(rt: WorkerRuntime, collector: BatchCollector, request: ChatRequest,
                     key: str) -> bool:
    """Has the caller of this placed request cancelled it? Count it towards cancelling its
    batch at the provider (the collector cancels once every caller of the batch has)."""
    if rt.cancels is None or request.lane != "async":
        return False
    placed = collector.placement(key)
    if placed is None:
        return False
    try:
        # Asked through the door or Gateway.cancel (queues/batch_wait.py); a plain cancel mark
        # counts too (one set after the worker's "started" mark expired, hours into a batch).
        if not (cancel_asked(rt.cancels.client, rt.cancels.key_prefix, key)
                or rt.cancels.state(key) == "cancelled"):
            return False
    except Exception as exc:  # noqa: BLE001 - unreadable: the batch runs on, billed as usual
        log.warning("could not read the cancel mark of %s: %s", request.request_id, exc)
        return False
    try:
        collector.cancel(placed)
    except Exception as exc:  # noqa: BLE001 - still cancelled: never answered directly
        log.warning("could not cancel %s batch %s: %s", placed.provider, placed.batch_id, exc)
    return True


def batch_state(rt: WorkerRuntime, request: ChatRequest, state: str) -> str:
    """The claim state as the batch seam sees it: ``polling`` for a task back to poll its
    pending provider batch (its live ``running`` claim is its own); for a run that took over a
    dead one whose request sits in a provider batch, the dead run's attempt is adopted (it is
    in flight, not lost). Other states pass through."""
    if state not in ("running", "resumed") or not waiting_in_batch(rt, request):
        return state
    if state == "resumed":
        adopt_sent(rt, request.request_id)
        return state
    return "polling"


def waiting_in_batch(rt: WorkerRuntime, request: ChatRequest) -> bool:
    """Is this request's task back to poll a provider batch it was placed in? Then its live
    ``running`` claim is its own (the run that placed it returned BatchPending), the provider
    has its money committed, and the run polls that batch instead of calling again."""
    if request.lane != "async":
        return False
    return collector_for(rt).placement(task_id_for(request)) is not None


def pending_attempt(rt: WorkerRuntime, request: ChatRequest, run: str, *,
                    polling: bool) -> int | None:
    """The batch attempt an earlier visit left pending, taken over by ``run`` (its id), or
    None: a first visit begins a new attempt. A poll that finds none (another visit holds it
    now) comes back later rather than paying for the request again."""
    found = reopen_pending(rt, request.request_id, run)
    if found is None and polling:
        raise BatchPending(f"request {request.request_id} is being polled by another visit; "
                           "this one comes back later", request_id=request.request_id,
                           retry_in=retry_in_s(rt.settings))
    return found


def retry_in_s(settings: Settings) -> float:
    """How soon a task whose batch is pending comes back to poll it."""
    return max(settings.batch.poll_interval_s, 0.05)


def max_visits(settings: Settings) -> int:
    """Polls of a pending batch before the task gives up: enough to outlast its placement
    (the provider's 24 h window, plus a margin)."""
    return int(PLACEMENT_TTL_S / (retry_in_s(settings) + max_wait_s(settings))) + 1


def hold_pending(rt: WorkerRuntime, env: Envelope, pending: BatchPending) -> dict[str, Any]:
    """The task reply of a request still pending in its provider batch, its reservation kept
    open while the placement lives: the provider bills it when the batch ends, and the money
    must stay held until it is settled then (the governor expires reservations past
    ``expires_at``). The reply names the reservation, which the second check may have
    replaced, so the task's next visit settles the one that is held."""
    rid = env.reservation_id
    pending.details["reservation_id"] = rid
    if rid is not None and rt.admission is not None:
        until = datetime.now(timezone.utc) + timedelta(seconds=PLACEMENT_TTL_S)
        try:
            with rt.session() as s:
                s.execute(update(ReservationRow)
                          .where(ReservationRow.id == rid, ReservationRow.state == "open",
                                 ReservationRow.expires_at < until)
                          .values(expires_at=until))
        except Exception as exc:  # noqa: BLE001 - the next visit tries again
            log.warning("could not hold reservation %s for its pending batch: %s", rid, exc)
    return error_reply(env.request.request_id, pending)


def collector_for(rt: WorkerRuntime) -> BatchCollector:
    """This process's collector, built on first use and kept on the runtime."""
    found: BatchCollector | None = getattr(rt, "_batch_collector", None)
    if found is None:
        with _LOCK:
            found = getattr(rt, "_batch_collector", None)
            if found is None:
                lane = rt.settings.lanes.get("async")
                found = BatchCollector(lambda name: build_batch_api(name, rt.settings),
                                       max_size=lane.batch_max,
                                       max_wait_s=lane.batch_timeout_ms / 1000.0,
                                       poll_interval_s=rt.settings.batch.poll_interval_s,
                                       retry=rt.retry,
                                       placements=placements_for(
                                           rt.settings.broker.state_url() or "memory://",
                                           rt.settings.broker.key_prefix))
                # One per worker process, like the runtime it hangs on.
                rt._batch_collector = found  # type: ignore[attr-defined]
    return found


def build_batch_api(name: str, settings: Settings) -> BatchAPI:
    """The Batch API adapter of provider ``name``, keyed like the single-call adapters."""
    p = settings.providers
    if name == "openai":
        from workers.batch.openai_batch import OpenAIBatchAPI

        return OpenAIBatchAPI(api_key=provider_key(p.openai_api_key, p.openai_base_url, "OPENAI"),
                              base_url=p.openai_base_url, timeout=p.timeout_s)
    if name == "anthropic":
        from workers.batch.anthropic_batch import AnthropicBatchAPI

        return AnthropicBatchAPI(
            api_key=provider_key(p.anthropic_api_key, p.anthropic_base_url, "ANTHROPIC"),
            base_url=p.anthropic_base_url, timeout=p.timeout_s)
    raise ConfigError(f"provider {name!r} has no Batch API; batching serves "
                      f"{', '.join(BATCH_PROVIDERS)}")
