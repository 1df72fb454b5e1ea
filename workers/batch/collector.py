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
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.retry import RetryPolicy, with_retries

log = logging.getLogger(__name__)


@dataclass
class _Group:
    first_at: float
    items: list[tuple[ProviderCall, Future[ProviderReply]]] = field(default_factory=list)


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api_for = api_for
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.poll_interval_s = max(0.001, poll_interval_s)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._cond = threading.Condition()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._inflight: list[_InFlight] = []  # touched only by the collector thread
        self._apis: dict[str, BatchAPI] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Batches submitted so far (for tests and logs).
        self.submitted: list[str] = []

    def submit(self, call: ProviderCall) -> Future[ProviderReply]:
        """Queue ``call`` for the next batch of its model; the future ends with its outcome."""
        future: Future[ProviderReply] = Future()
        key = (call.model.provider, call.model.name)
        with self._cond:
            if self._closed:
                raise ProviderRetryable("the batch collector is shut down; the worker is "
                                        "stopping, retry the request", provider=key[0])
            self._start()
            group = self._groups.setdefault(key, _Group(first_at=self._clock()))
            group.items.append((call, future))
            # Wake the loop at once when the group is full or the first one arrived.
            if len(group.items) >= self.max_size or len(group.items) == 1:
                self._cond.notify()
        return future

    def close(self) -> None:
        """Stop the loop; calls still gathering fail with a retryable error."""
        with self._cond:
            self._closed = True
            pending = [f for g in self._groups.values() for _, f in g.items]
            self._groups.clear()
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

    def _wait_for_work(self) -> list[tuple[tuple[str, str], list[tuple[ProviderCall,
                                                                   Future[ProviderReply]]]]] | None:
        """Block until a group is due or a poll is; pop the due groups (None once closed)."""
        with self._cond:
            while not self._closed:
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

    def _api(self, provider: str) -> BatchAPI:
        api = self._apis.get(provider)
        if api is None:
            api = self._apis[provider] = self._api_for(provider)
        return api

    def _send(self, key: tuple[str, str],
              items: list[tuple[ProviderCall, Future[ProviderReply]]]) -> None:
        # custom ids are ours, not request ids: Anthropic allows only [A-Za-z0-9_-]{1,64}.
        numbered = {f"r{n}": item for n, item in enumerate(items)}
        try:
            api = self._api(key[0])
            batch_id = with_retries(
                lambda: api.submit([(cid, call) for cid, (call, _) in numbered.items()]),
                self._retry)
        except ProviderError as err:
            log.warning("batch of %d %s calls not submitted: %s", len(items), key[1], err)
            for _, fut in items:
                fut.set_exception(err)
            return
        except Exception as exc:  # noqa: BLE001 - a loop thread that dies strands every waiter
            log.exception("batch submission crashed")
            for _, fut in items:
                fut.set_exception(ProviderRetryable(f"batch submission crashed: {exc}",
                                                    provider=key[0]))
            return
        self.submitted.append(batch_id)
        log.info("submitted %s batch %s with %d calls", key[1], batch_id, len(items))
        self._inflight.append(_InFlight(api, batch_id, {cid: f for cid, (_, f) in numbered.items()},
                                        next_poll=self._clock() + self.poll_interval_s))

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
