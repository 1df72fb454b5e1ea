"""One batch collector per worker process: gather calls per model, submit, poll, resolve futures.

Task threads call :meth:`BatchCollector.submit` and wait on the future it returns. A single
background thread flushes a group when it reaches ``max_size`` or its oldest call has waited
``max_wait_s`` (the async lane's ``batch_max`` / ``batch_timeout_ms``), then polls every
submitted batch each ``poll_interval_s`` and hands each outcome to its future.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from models.domain.errors import ProviderError, ProviderRetryable
from workers.batch.base import BatchAPI
from workers.batch.placements import Placement, Placements
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.retry import RetryPolicy, with_retries

log = logging.getLogger(__name__)


#: A call waiting for its batch: the call, its caller's future, and its placement key (if any).
_Item = tuple[ProviderCall, Future[ProviderReply], str | None]
#: Calls batched together: provider, model, and (OpenAI) whether on the Responses endpoint.
GroupKey = tuple[str, str, bool]


@dataclass
class _Group:
    first_at: float
    items: list[_Item] = field(default_factory=list)


@dataclass
class _InFlight:
    api: BatchAPI
    batch_id: str
    futures: dict[str, Future[ProviderReply]]
    next_poll: float


class BatchCollector:
    """Gathers calls bound for provider Batch APIs and resolves each caller's future."""

    def __init__(self, api_for: Callable[[str], BatchAPI], *, max_size: int, max_wait_s: float,
                 poll_interval_s: float, retry: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 placements: Placements | None = None) -> None:
        self._api_for = api_for
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.poll_interval_s = max(0.001, poll_interval_s)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._cond = threading.Condition()
        self._groups: dict[GroupKey, _Group] = {}
        self._inflight: list[_InFlight] = []  # touched only by the collector thread
        self._apis: dict[str, BatchAPI] = {}
        #: Where keyed calls went; a redelivered call is taken from its earlier batch.
        self._placements = placements
        self._adopted: list[tuple[Placement, Future[ProviderReply]]] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Batches submitted so far (for tests and logs).
        self.submitted: list[str] = []

    def submit(self, call: ProviderCall, key: str | None = None) -> Future[ProviderReply]:
        """Queue ``call`` for the next batch of its model; the future ends with its outcome.

        ``key`` (the task id) records where the call went. A call whose key was already placed
        in a provider batch (the task was redelivered after its worker died) is not sent again:
        its answer is read from that batch, so the provider bills it once.
        """
        future: Future[ProviderReply] = Future()
        placed = self._placed(key)
        provider = call.model.provider
        with self._cond:
            if self._closed:
                raise ProviderRetryable("the batch collector is shut down; the worker is "
                                        "stopping, retry the request", provider=provider)
            self._start()
            if placed is not None:
                log.info("request %s is already in %s batch %s: waiting for that batch",
                         call.request.request_id, placed.provider, placed.batch_id)
                self._adopted.append((placed, future))
                self._cond.notify()
                return future
            # A provider batch has one endpoint: Responses-door calls to OpenAI go apart.
            group_key = (provider, call.model.name,
                         provider == "openai" and call.request.openai_responses is not None)
            group = self._groups.setdefault(group_key, _Group(first_at=self._clock()))
            group.items.append((call, future, key))
            # Wake the loop at once when the group is full or the first one arrived.
            if len(group.items) >= self.max_size or len(group.items) == 1:
                self._cond.notify()
        return future

    def _placed(self, key: str | None) -> Placement | None:
        if key is None or self._placements is None:
            return None
        try:
            return self._placements.get(key)
        except Exception as exc:  # noqa: BLE001 - the store is the broker's Redis: down, it
            # cannot redeliver either, so a task here is a first delivery
            log.warning("could not read the batch placement of %s: %s", key, exc)
            return None

    def placement(self, key: str | None) -> Placement | None:
        """Where the call of task ``key`` was placed, if it was submitted in a batch."""
        return self._placed(key)

    def cancel(self, placed: Placement) -> bool:
        """The caller of ``placed`` cancelled: once every caller of its batch has, cancel the
        batch at the provider (True then). Unanswered requests of a cancelled batch are not
        billed; their callers' futures end with the provider's ``canceled`` outcome."""
        if self._placements is None:
            return False
        count = self._placements.cancel(placed)
        if not placed.size or count < placed.size:
            return False
        with self._cond:
            api = self._api(placed.provider)
        api.cancel(placed.batch_id)
        log.info("every caller of %s batch %s cancelled: cancelled it at the provider",
                 placed.provider, placed.batch_id)
        return True

    def close(self) -> None:
        """Stop the loop; calls still gathering fail with a retryable error."""
        with self._cond:
            self._closed = True
            pending = [f for g in self._groups.values() for _, f, _ in g.items]
            pending += [f for _, f in self._adopted]
            self._groups.clear()
            self._adopted.clear()
            self._cond.notify()
        for fut in pending:
            fut.set_exception(ProviderRetryable("the batch collector shut down before this "
                                                "request was sent", provider="batch"))
        if self._thread is not None:
            self._thread.join(timeout=5)
        for api in self._apis.values():
            api.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sluice-batch-collector",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            due = self._wait_for_work()
            if due is None:
                return
            for key, items in due:
                self._send(key, items)
            now = self._clock()
            for flight in [f for f in self._inflight if f.next_poll <= now]:
                self._poll(flight)

    def _wait_for_work(self) -> list[tuple[GroupKey, list[_Item]]] | None:
        """Block until a group is due or a poll is; pop the due groups (None once closed)."""
        with self._cond:
            while not self._closed:
                self._take_adopted()
                now = self._clock()
                due_keys = [k for k, g in self._groups.items()
                            if len(g.items) >= self.max_size or now >= g.first_at + self.max_wait_s]
                if due_keys or any(f.next_poll <= now for f in self._inflight):
                    due = []
                    for key in due_keys:
                        items = self._groups.pop(key).items
                        due += [(key, items[i:i + self.max_size])
                                for i in range(0, len(items), self.max_size)]
                    return due
                wake = [g.first_at + self.max_wait_s for g in self._groups.values()]
                wake += [f.next_poll for f in self._inflight]
                self._cond.wait(timeout=min(max(min(wake, default=now + 1.0) - now, 0.0005), 1.0))
            return None

    def _take_adopted(self) -> None:
        """Poll the batches redelivered calls already sit in (on the loop thread, locked)."""
        for placed, future in self._adopted:
            flight = next((f for f in self._inflight if f.batch_id == placed.batch_id), None)
            if flight is None:
                try:
                    api = self._api(placed.provider)
                except Exception as exc:  # noqa: BLE001 - this caller fails, the loop lives
                    future.set_exception(ProviderRetryable(
                        f"cannot poll {placed.provider} batch {placed.batch_id}: {exc}",
                        provider=placed.provider))
                    continue
                flight = _InFlight(api, placed.batch_id, {}, next_poll=self._clock())
                self._inflight.append(flight)
            earlier = flight.futures.get(placed.custom_id)
            if earlier is None:
                flight.futures[placed.custom_id] = future
            else:  # two waiters for one answer: the second follows the first
                earlier.add_done_callback(lambda done, f=future: _copy(done, f))
        self._adopted.clear()

    def _api(self, provider: str) -> BatchAPI:
        api = self._apis.get(provider)
        if api is None:
            api = self._apis[provider] = self._api_for(provider)
        return api

    def _send(self, key: GroupKey, items: list[_Item]) -> None:
        # custom ids are ours, not request ids: Anthropic allows only [A-Za-z0-9_-]{1,64}.
        numbered = {f"r{n}": item for n, item in enumerate(items)}
        try:
            api = self._api(key[0])
            batch_id = with_retries(
                lambda: api.submit([(cid, call) for cid, (call, _, _) in numbered.items()]),
                self._retry)
        except ProviderError as err:
            log.warning("batch of %d %s calls not submitted: %s", len(items), key[1], err)
            for _, fut, _ in items:
                fut.set_exception(err)
            return
        except Exception as exc:  # noqa: BLE001 - a loop thread that dies strands every waiter
            log.exception("batch submission crashed")
            for _, fut, _ in items:
                fut.set_exception(ProviderRetryable(f"batch submission crashed: {exc}",
                                                    provider=key[0]))
            return
        # Recorded first: a kill between the provider's answer and this write is the one
        # window in which a redelivery would put the same requests into a second batch.
        self._record(key, batch_id, numbered)
        self.submitted.append(batch_id)
        log.info("submitted %s batch %s with %d calls", key[1], batch_id, len(items))
        self._inflight.append(_InFlight(api, batch_id,
                                        {cid: f for cid, (_, f, _) in numbered.items()},
                                        next_poll=self._clock() + self.poll_interval_s))

    def _record(self, key: GroupKey, batch_id: str, numbered: dict[str, _Item]) -> None:
        placed = {task: Placement(key[0], key[1], batch_id, cid, size=len(numbered))
                  for cid, (_, _, task) in numbered.items() if task is not None}
        if not placed or self._placements is None:
            return
        try:
            self._placements.put(placed)
        except Exception as exc:  # noqa: BLE001 - the batch is out; only a crash would need it
            log.warning("could not record where %d requests of batch %s went: %s",
                        len(placed), batch_id, exc)

    def _poll(self, flight: _InFlight) -> None:
        try:
            state = flight.api.poll(flight.batch_id)
            outcomes = flight.api.results(flight.batch_id) if state.ended else None
        except ProviderRetryable as err:
            log.info("polling batch %s failed, trying again: %s", flight.batch_id, err)
            flight.next_poll = self._clock() + self.poll_interval_s
            return
        except Exception as exc:  # noqa: BLE001 - fail this batch's waiters, keep the loop alive
            err = exc if isinstance(exc, ProviderError) else ProviderRetryable(
                f"polling batch {flight.batch_id} crashed: {exc}", provider=flight.api.name)
            self._finish(flight, {}, err)
            return
        if outcomes is None:
            flight.next_poll = self._clock() + self.poll_interval_s
            return
        missing = ProviderRetryable(f"{flight.api.name} batch {flight.batch_id} ended "
                                    f"({state.status}) without an answer for this request",
                                    provider=flight.api.name)
        self._finish(flight, outcomes, missing)

    def _finish(self, flight: _InFlight, outcomes: dict[str, object], default: Exception) -> None:
        self._inflight.remove(flight)
        for cid, fut in flight.futures.items():
            out = outcomes.get(cid, default)
            if isinstance(out, ProviderReply):
                fut.set_result(out)
            else:
                fut.set_exception(out if isinstance(out, BaseException) else default)


def _copy(done: Future[ProviderReply], to: Future[ProviderReply]) -> None:
    exc = done.exception()
    if exc is not None:
        to.set_exception(exc)
    else:
        to.set_result(done.result())
