"""Await task results on the event loop without parking a thread per waiting request.

With a Redis result store Celery pushes each result on a pub/sub channel that ``send_task``
already subscribed to. One drainer thread reads that channel for the whole process and hands
each result to the asyncio future waiting for it (``AsyncResult.then``). Result stores that
only poll (memory, databases) fall back to waiting in a bounded thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from models.domain.errors import ResultTimeout, SluiceError
from models.domain.result import ChatResult
from queues.handle import (PENDING, PUSH_SLICE_S, Handle, TaskHandle, decode_reply,
                           reply_from_meta)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watch:
    """A request being watched: its future, and the pending Celery result behind it, if any."""

    future: asyncio.Future[Any]
    request_id: str
    pending: AsyncResult | None = None


def prepare_app(app: Celery) -> Celery:
    """Share one result backend (one pub/sub connection) across threads; call before first use."""
    app.conf.result_backend_thread_safe = True
    return app


class ResultWaiter:
    """Turns a submitted request's handle into an awaitable result."""

    def __init__(self, app: Celery, *, threads: int = 64) -> None:
        self.app = app
        self.backend = app.backend
        self.pushes = bool(getattr(self.backend, "is_async", False)
                           and hasattr(self.backend, "result_consumer"))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sluice-wait")
        self._stop = threading.Event()
        self._drainer: threading.Thread | None = None
        self._lock = threading.Lock()
        # Watched requests by task id: (result, settle, since). A push lost while the pub/sub
        # connection was rebuilt (Redis restarted) is made good by reading the stored result.
        self._watching: dict[str, tuple[AsyncResult, Any, float]] = {}
        # Fresh watches the drainer looks up once more in Celery's buffer of early pushes.
        self._recheck: deque[AsyncResult] = deque()

    def watch(self, handle: Handle, loop: asyncio.AbstractEventLoop, timeout: float, *,
              fresh: bool = False) -> Watch:
        """Start watching ``handle``: call from the thread that submitted it, right after.

        Doing this off the event loop matters: registering may touch the result store.
        ``fresh``: its request id was minted for this request, so no earlier run can have
        stored a result for it and the one read of the result store is skipped.
        """
        fut: asyncio.Future[Any] = loop.create_future()
        if not isinstance(handle, TaskHandle):
            loop.call_soon_threadsafe(_settle, fut, handle.result())
            return Watch(fut, handle.request_id)
        if not self.pushes:
            pool_fut = self._pool.submit(_blocking_reply, handle, timeout)
            pool_fut.add_done_callback(
                lambda f: loop.call_soon_threadsafe(_settle_from, fut, f))
            return Watch(fut, handle.request_id)
        self._ensure_drainer()
        ar = AsyncResult(handle.task_id, app=self.app, backend=self.backend)

        key = handle.task_id

        def settle(value: Any) -> None:
            self._watching.pop(key, None)
            loop.call_soon_threadsafe(_settle, fut, value)

        def ready(result: AsyncResult) -> None:
            # Runs on the drainer thread; the meta is cached on ``result``, so no I/O here.
            settle(_reply_of(result))

        self._watching[key] = (ar, settle, time.monotonic())
        ar.then(ready, weak=False)
        # One read of the stored result, as AsyncResult.get does: a duplicate of a finished
        # request (same request id) publishes nothing, since Celery never overwrites SUCCESS.
        # A fresh id skips it: a result pushed before ``then`` registered waits in Celery's
        # buffer and is taken from there. One the drainer read between that buffer check and
        # the registration (two statements apart) also lands in the buffer: the drainer,
        # the only thread that fills it, looks once more after its next read.
        if fresh:
            self._recheck.append(ar)
        else:
            ar.ready()
        return Watch(fut, handle.request_id, ar)

    async def wait(self, watch: Watch, timeout: float) -> ChatResult:
        """The result of a watched request, or its typed error; ResultTimeout after ``timeout``."""
        try:
            outcome = await asyncio.wait_for(watch.future, timeout)
        except asyncio.TimeoutError:
            if watch.pending is not None:
                self._abandon(watch.pending)
            raise ResultTimeout(
                f"request {watch.request_id} has no result after {timeout:g} s; it may still "
                f"finish: poll GET /v1/jobs/{watch.request_id}",
                request_id=watch.request_id) from None
        if isinstance(outcome, SluiceError):
            raise outcome
        if isinstance(outcome, ChatResult):
            return outcome
        raise SluiceError(f"request {watch.request_id} ended unexpectedly: {outcome!r}")

    def _abandon(self, ar: AsyncResult) -> None:
        self._watching.pop(str(ar.id), None)
        try:
            self.backend.remove_pending_result(ar)
        except Exception:  # noqa: BLE001 - only bookkeeping; the result expires anyway
            log.debug("could not drop pending result %s", ar.id, exc_info=True)

    def _ensure_drainer(self) -> None:
        if self._drainer is None:
            with self._lock:
                if self._drainer is None:
                    self._drainer = threading.Thread(target=self._drain, daemon=True,
                                                     name="sluice-result-drainer")
                    self._drainer.start()

    def _drain(self) -> None:
        consumer = self.backend.result_consumer
        checked = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - checked >= PUSH_SLICE_S:
                checked = time.monotonic()
                self._read_stored(checked - PUSH_SLICE_S)
            try:
                consumer.drain_events(timeout=0.1)
            except TimeoutError:
                pass
            except Exception:  # noqa: BLE001 - a dead drainer would strand every waiter
                log.warning("result drainer: reading results failed; retrying", exc_info=True)
                time.sleep(0.2)
            self._take_buffered()

    def _take_buffered(self) -> None:
        """Settle fresh watches whose push the drainer buffered just before they registered."""
        while self._recheck:
            ar = self._recheck.popleft()
            try:
                # Celery's own lookup, as ``then`` does; this thread is the only one that
                # buffers pushes, so nothing can slip in between any more.
                self.backend._maybe_resolve_from_buffer(ar)
            except Empty:
                continue  # nothing buffered: its push is still to come, to the registered one

    def _read_stored(self, older_than: float) -> None:
        """Settle watches that waited a whole slice from their stored results, if ready.

        One MGET for all of them: a front door may hold thousands of slow requests at once.
        """
        due = [(ar, settle) for ar, settle, since in list(self._watching.values())
               if since <= older_than]
        if not due:
            return
        try:
            raws = self.backend.client.mget([self.backend.get_key_for_task(ar.id)
                                             for ar, _ in due])
        except Exception as exc:  # noqa: BLE001 - the store is away: the next slice tries again
            log.debug("could not read stored results: %s", exc)
            return
        for (ar, settle), raw in zip(due, raws):
            if raw is None:
                continue
            try:
                value = reply_from_meta(self.backend.decode_result(raw), self.backend)
            except Exception as exc:  # noqa: BLE001 - the task failed in Celery: say so
                settle(SluiceError(f"request {ar.id} failed in the worker: {exc!r}"))
                continue
            if value is not PENDING:
                settle(decode_reply(value))

    def close(self) -> None:
        """Stop the drainer and the fallback pool."""
        self._stop.set()
        if self._drainer is not None:
            self._drainer.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reply_of(result: AsyncResult) -> ChatResult | SluiceError:
    if result.successful():
        return decode_reply(result.result)
    return SluiceError(f"request {result.id} failed in the worker: {result.result!r}")


def _blocking_reply(handle: Handle, timeout: float) -> ChatResult | SluiceError:
    try:
        return handle.result(timeout=timeout)
    except SluiceError as err:
        return err


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _settle_from(fut: asyncio.Future[Any], done: Any) -> None:
    if fut.done():
        return
    exc = done.exception()
    _settle(fut, exc if exc is not None else done.result())
