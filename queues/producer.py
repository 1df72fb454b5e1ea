"""The producer API app services import: ``submit(request)`` and ``complete(request, timeout)``."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from models.domain.catalogue import Catalogue, load_catalogue
from models.domain.allow_list import may_use
from models.domain.charges import reach_worst_case, reachable
from models.domain.errors import (BrokerError, BudgetExceeded, ConfigError, QueuePaused,
                                  ValidationError)
from models.domain.request import MAX_TIMEOUT_S, ChatRequest, openai_tool_calls, parse_request
from models.domain.result import ChatResult
from models.domain.quality import PURPOSE_TAG
from models.domain.settings import Settings
from models.domain.tokens import prompt_count
from queues.app import create_app
from queues.batch_wait import ask_cancel
from queues.cancel import CancelMarks
from queues.envelope import Envelope, task_id_for
from queues.inflight import Inflight, InflightMessage
from queues.handle import Handle, ReadyHandle, TaskHandle
from queues.names import task_for
from queues.rate_step import RateStep
from queues.retried_results import set_aside_error
from scheduler.hooks import Admission, PauseBook, ResponseCache
from scheduler.route import Scorer, decide_route

log = logging.getLogger(__name__)


class Gateway:
    """One request's path up to the queue: validate, cache, route, admit, enqueue."""

    def __init__(self, settings: Settings, *, app: Celery | None = None,
                 catalogue: Catalogue | None = None, scorer: Scorer | None = None,
                 admission: Admission | None = None, cache: ResponseCache | None = None,
                 pauses: PauseBook | None = None, cache_hit_sink: Any = None,
                 inflight: Inflight | None = None, cancels: CancelMarks | None = None,
                 ladders: Any = None, sessions: Any = None, limiter: Any = None) -> None:
        self.settings = settings
        #: The ledger's session factory (feedback is stored there); None: no feedback.
        self.sessions = sessions
        #: Rate limits (scheduler.ratelimit.RedisRateLimiter); None: none enforced.
        self.limiter = limiter
        #: Where callers cancel queued async requests (queues.cancel); None: not possible.
        self.cancels = cancels
        #: Records each message until its ledger row is final (re-sends what a broker lost).
        self.inflight = inflight
        self.app = app or create_app(settings)
        self.catalogue = catalogue or load_catalogue(settings.prices_path)
        self.scorer = scorer
        self.admission = admission
        self.cache = cache
        self.pauses = pauses
        #: Called with (request, result) for each cache hit, to write its ledger row.
        self.cache_hit_sink = cache_hit_sink
        #: Per-feature model ladders (scheduler.router.ladder_book), re-read as they change.
        self.ladders = ladders

    def submit(self, data: ChatRequest | dict[str, Any], *,
               admit: Callable[[ChatRequest], None] | None = None,
               stream: bool = False, fresh: bool = False) -> Handle:
        """Validate and dispatch ``data``; returns at once with a handle to wait on or forget.

        ``admit`` is called for a request that must be queued (not for a cache hit), before
        its budget is reserved: the front door sheds load there (raising Overloaded).
        Raises ValidationError (and its subclasses), BudgetExceeded, RateLimited (with
        ``retry_after_s``; an async-lane request waits in its queue instead), QueuePaused,
        Overloaded or BrokerError before anything is enqueued. ``fresh``: the request id was
        minted for this request (a caller's own id may be a retry of an errored request).
        """
        request = parse_request(data)
        fresh = fresh or "request_id" not in request.model_fields_set
        if PURPOSE_TAG in request.tags:
            raise ValidationError(f"the tag {PURPOSE_TAG!r} is sluicegate's own (it marks shadow "
                                  "and judge requests): remove it", field="tags")
        if self.cache is not None and request.cache.mode == "use":
            hit = self.cache.lookup(request)
            if hit is not None:
                if self.cache_hit_sink is not None:
                    hit = self.cache_hit_sink(request, hit)
                return ReadyHandle(hit)
        try:
            if admit is not None:
                admit(request)
            return self._dispatch(request, stream=stream, fresh=fresh)
        except BaseException:
            # A refused request must not leave identical ones waiting on its single-flight
            # claim: release it so they proceed on their own at once.
            if self.cache is not None and request.cache.mode != "bypass":
                self.cache.abandon(request)
            raise

    def _dispatch(self, request: ChatRequest, *, stream: bool = False,
                  fresh: bool = False) -> Handle:
        prompt = prompt_count(request)
        prompt_tokens = prompt.tokens
        route = decide_route(request, self.catalogue, self.settings.routing, scorer=self.scorer,
                             prompt_tokens=prompt_tokens, ladders=self.ladders)
        if self.pauses is not None:
            reason = self.pauses.paused(route.queue)
            if reason:
                raise QueuePaused(f"queue {route.queue} is paused ({reason}); retry later or ask "
                                  "an operator to run `sluice queues resume`", queue=route.queue)
        model = self.catalogue.get(route.model)
        if request.has_images:  # images count by the routed provider's rule
            prompt = prompt_count(request, model)
            prompt_tokens = prompt.tokens
        return self.governed(request, route, prompt_tokens, lambda step:
                             self._reserve_and_send(request, route, prompt, step,
                                                    stream=stream, fresh=fresh))

    def governed(self, request: Any, route: Any, prompt_tokens: int,
                 send: Callable[[RateStep], Handle]) -> Handle:
        """Rate limits and money in one step: ``send(step)`` reserves the budget with ``step``
        (the rate windows) run inside the reservation's transaction, then publishes (the chat
        and embedding paths alike). A budget refusal never touches the windows, a rate
        refusal rolls the reservation back, and a failed send gives both back."""
        step = RateStep(self.limiter, request, route, prompt_tokens)
        try:
            return send(step)
        except BaseException as exc:
            step.give_back()
            if isinstance(exc, BudgetExceeded) and self.limiter is not None:
                # Refusals by the limit that refused, budgets beside rate limits (Prometheus).
                self.limiter.count_refusal(f"budget:{exc.details.get('budget')}", "usd")
            raise

    def _reserve_and_send(self, request: ChatRequest, route: Any, prompt: Any,
                          step: RateStep, *, stream: bool, fresh: bool = False) -> Handle:
        prompt_tokens = prompt.tokens
        reservation, reused = None, False
        if self.admission is not None:
            # The dearest model the request can reach (a fallback, a stronger rung of its
            # ladder, those its key may use): one is sent only inside it.
            chain = reachable(self.catalogue, self.settings.providers.fallbacks, route.model,
                              route.escalation)
            chain = chain[:1] + [m for m in chain[1:]
                                 if may_use(request, m.name, self.settings.routing)]
            amount = reach_worst_case(prompt, request.max_tokens, chain)
            reservation, reused = self._reserve(request, route, amount, step)
        try:
            # Inside: an admission that did not run the step leaves it here, after the money,
            # and a refusal by it must release that money too.
            step.ensure()
            grant, waits = step.grant, step.waits
            now = time.time()
            envelope = Envelope(request=request, route=route, prompt_tokens=prompt_tokens,
                                reservation_id=reservation, prompt_hash=prompt_hash(request),
                                enqueued_at=now, deadline=self._deadline(request, now),
                                stream=stream, rate_grant=grant.to_json() if grant else None,
                                rate_wait=waits is not None)
            if not fresh:
                self.forget_error(task_id_for(request))
            return TaskHandle(self._send(envelope, countdown=waits),
                              request_id=request.request_id, model=route.model)
        except Exception:
            # Never one the request already held: that is its first run's, still running.
            if reservation is not None and self.admission is not None and not reused:
                self.admission.release(reservation)
            raise

    def _reserve(self, request: ChatRequest, route: Any, amount: Any,
                 step: RateStep) -> tuple[str | None, bool]:
        """The reservation, and whether the request already held it (an admission without
        ``reserve_once`` never reuses one); ``step`` runs inside it."""
        once = getattr(self.admission, "reserve_once", None)
        if once is not None:
            rid, reused = once(request, route, amount, within=step.needed)
            return rid, bool(reused)
        assert self.admission is not None
        return self.admission.reserve(request, route, amount,
                                      within=step.needed), False

    def _deadline(self, request: ChatRequest, now: float) -> float | None:
        """When a worker should no longer start the request: once its caller's own timeout has
        passed, or, when the caller gave none, its lane's queue timeout (None: no limit)."""
        limit = request.timeout_s or self.settings.lanes.get(request.lane).queue_timeout_s
        return now + limit if limit else None

    def complete(self, data: ChatRequest | dict[str, Any], timeout: float | None = 60.0
                 ) -> ChatResult:
        """Submit ``data`` and wait up to ``timeout`` seconds for its result; unless ``data``
        says otherwise (``timeout_s``), a worker will not start it after that either."""
        request = parse_request(data)
        if request.timeout_s is None and timeout is not None and 0 < timeout <= MAX_TIMEOUT_S:
            request = request.model_copy(update={"timeout_s": timeout})
        return self.submit(request).result(timeout=timeout)

    def embed(self, data: Any, timeout: float | None = 60.0) -> Any:
        """Embed ``data`` (``{"team", "feature", "input": ..., "model": "auto"}``) and wait for
        every vector: an EmbeddingResult (vectors in the caller's order, usage, cost). Items
        cached for this scope, model and size are not sent again (queues/embeddings.py)."""
        from queues.embeddings import embed

        return embed(self, data, timeout)

    def submit_embedding(self, data: Any, *, admit: Callable[[Any], None] | None = None
                         ) -> Any:
        """Dispatch an embedding request; returns at once with its EmbeddingHandle."""
        from queues.embeddings import submit_embedding

        return submit_embedding(self, data, admit=admit)

    def feedback(self, data: Any) -> bool:
        """Attach an outcome to an answered request (``{"team", "request_id", "thumb": 1|-1,
        "metric", "value"}``); it joins the judged pairs of ``sluice quality``. True when
        recorded; raises ValidationError for bad input or a request id this team never sent."""
        from queues.feedback import record

        return record(self, data)

    def _send(self, envelope: Envelope, countdown: float | None = None) -> Any:
        lane = self.settings.lanes.get(envelope.route.lane)
        req = envelope.request
        options = {"priority": lane.priority, "soft_time_limit": lane.soft_time_limit_s,
                   "time_limit": lane.time_limit_s,
                   # What Flower and worker logs show for the task instead of Celery's repr of
                   # the whole envelope: attribution only, never the prompt, and no repr of a
                   # large message on the producer's hot path.
                   "argsrepr": f"({req.request_id!r}, team={req.team!r}, "
                               f"feature={req.feature!r}, model={envelope.route.model!r})",
                   "kwargsrepr": "{}"}
        if countdown:
            options["countdown"] = countdown
        task_id = task_id_for(envelope.request)
        args = [envelope.to_message()]
        try:
            if self.inflight is not None:
                self.inflight.add(InflightMessage(
                    task_id=task_id, request_id=envelope.request.request_id,
                    task=task_for(envelope.route.backend), queue=envelope.route.queue,
                    args=args, options=options))
            try:
                return self.app.send_task(task_for(envelope.route.backend), args=args,
                                          task_id=task_id, queue=envelope.route.queue,
                                          routing_key=envelope.route.queue, **options)
            except BaseException:
                # The caller is told the request failed (and its reservation is released): the
                # sweeper must not send it later, to be run and paid for behind its back.
                self._unrecord(task_id)
                raise
        except (OperationalError, RedisError) as exc:
            raise BrokerError(f"the broker at {self._broker()} refused the request: {exc}; "
                              "check that it runs (SLUICE_BROKER__URL) and retry") from exc

    def forget_error(self, task_id: str) -> None:
        """A caller's retry of an errored request (same id): set its old stored error aside,
        so its handle waits for the retry's run instead of reading the old error at once
        (queues/retried_results.py). Best effort: a result store that is away answers
        nobody's handle either."""
        try:
            set_aside_error(self.app.backend, task_id)
        except Exception as exc:  # noqa: BLE001 - the retry still runs; its worker tries too
            log.warning("could not set aside the earlier error of %s: %s", task_id, exc)

    def _unrecord(self, task_id: str) -> None:
        """Forget the in-flight record of a message that was never published (best effort)."""
        if self.inflight is None:
            return
        try:
            self.inflight.done(task_id)
        except Exception as exc:  # noqa: BLE001 - the publish error is the one to report
            log.error("could not forget the in-flight record of unsent %s (the sweeper may send "
                      "it later): %s", task_id, exc)

    def cancel(self, handle: Handle | str) -> bool:
        """Cancel a queued async-lane request (its handle, or its task id): the worker that
        reaches it does not send it to a provider, writes a $0 row (``error_code``
        ``cancelled``) and releases its reservation; True. A request a worker already started
        runs to the end and is billed; False; except one waiting in a provider batch (True):
        once every request of its batch is cancelled, the batch is cancelled at the provider.
        Raises ConfigError without a Redis broker, BrokerError when Redis cannot be reached."""
        task_id = handle if isinstance(handle, str) else getattr(handle, "task_id", None)
        if task_id is None:
            raise ValidationError("this request was answered from the response cache: nothing "
                                  "is queued to cancel", field="handle")
        if self.cancels is None:
            raise ConfigError("cancelling a request needs a Redis broker or result store "
                              "(SLUICE_BROKER__URL or SLUICE_BROKER__RESULT_BACKEND="
                              "redis://...); neither here can hold the mark")
        try:
            # Started, but waiting in a provider batch: cancellable (queues/batch_wait.py).
            return self.cancels.mark(task_id) or ask_cancel(self.cancels.client,
                                                            self.cancels.key_prefix, task_id)
        except RedisError as exc:
            raise BrokerError(f"could not cancel {task_id}: the broker at {self._broker()} "
                              f"is unreachable ({exc}); retry") from exc

    def _broker(self) -> str:
        url = self.settings.broker.url
        return url.split("@")[-1]  # never echo credentials

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until side writes (cache-hit ledger rows) have landed."""
        flush = getattr(self.cache_hit_sink, "flush", None)
        if flush is not None:
            flush(timeout)

    def close(self) -> None:
        """Flush side writes and release broker connections."""
        self.flush()
        self.app.close()


def prompt_hash(request: ChatRequest) -> str:
    """SHA-256 of the prompt (static and dynamic parts), stored instead of the text."""
    h = hashlib.sha256()
    h.update(request.static.stable_json().encode())
    for m in request.messages:
        h.update(b"\x00" + m.role.encode() + b"\x00" + m.content.encode())
        if m.tool_calls or m.tool_call_id:  # plain turns hash as before
            h.update(b"\x00" + json.dumps([m.tool_call_id, openai_tool_calls(m.tool_calls)],
                                          separators=(",", ":")).encode())
    return h.hexdigest()


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a time.time() value)."""
    return (time.time() - since) * 1000.0


def connect(settings: Settings, **overrides: Any) -> Gateway:
    """A Gateway with every lever this installation has configured.

    The default router is the heuristic one (no training data needed); the ledger records
    response-cache hits, which never reach a worker.
    """
    from queues.wiring import producer_levers

    levers = producer_levers(settings)
    levers.update(overrides)
    return Gateway(settings, **levers)
