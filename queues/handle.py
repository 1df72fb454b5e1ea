"""Handles returned by ``submit()``: wait for the result, await it, or forget it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from models.domain.errors import ResultTimeout, SluiceError, from_dict
from models.domain.result import ChatResult

log = logging.getLogger(__name__)

#: How long one wait on the pushed result lasts before the stored result is read directly.
#: Redis pushes results over pub/sub, and a push sent while the subscription was being rebuilt
#: (Redis restarted) is never seen again; the stored copy is. One GET per waiting handle per
#: slice is the price.
PUSH_SLICE_S = 1.0


class Handle:
    """A submitted request. ``result()`` blocks, ``await handle`` does not block the loop."""

    request_id: str

    def result(self, timeout: float | None = None) -> ChatResult:
        """The result, or the typed error the request ended with."""
        raise NotImplementedError

    def done(self) -> bool:
        """Whether the result is ready."""
        raise NotImplementedError

    def forget(self) -> None:
        """Drop interest in the result (fire and forget)."""

    def __await__(self) -> Any:
        return asyncio.to_thread(self.result).__await__()


class ReadyHandle(Handle):
    """A request answered without the queue (a response-cache hit)."""

    def __init__(self, result: ChatResult) -> None:
        self.request_id = result.request_id
        self._result = result

    def result(self, timeout: float | None = None) -> ChatResult:
        return self._result

    def done(self) -> bool:
        return True


class TaskHandle(Handle):
    """A request travelling through a Celery queue; its task id is the request id."""

    def __init__(self, async_result: AsyncResult, request_id: str | None = None,
                 model: str = "") -> None:
        #: The Celery task id: the request id scoped to its tenant (queues.envelope.task_id_for).
        self.task_id = str(async_result.id)
        self.request_id = request_id or self.task_id
        #: The model the request was routed to ("" when unknown).
        self.model = model
        self._ar = async_result
        self._cached: ChatResult | SluiceError | None = None

    def result(self, timeout: float | None = None) -> ChatResult:
        if self._cached is None:
            self._cached = decode_reply(self._wait(timeout))
        if isinstance(self._cached, SluiceError):
            raise self._cached
        return self._cached

    def _wait(self, timeout: float | None) -> Any:
        """The task's return value: pushed when the result store pushes, else read directly."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                # Polling result stores (memory, database) are checked every `interval` seconds;
                # Redis pushes results, so the interval does not matter there.
                return self._ar.get(timeout=PUSH_SLICE_S if left is None
                                    else min(left, PUSH_SLICE_S),
                                    propagate=True, interval=0.005, disable_sync_subtasks=False)
            except CeleryTimeout:
                pass
            except RuntimeError as exc:
                # Celery gave up rebuilding its pub/sub connection (the result store was away
                # too long); the stored result below still answers.
                log.debug("result push channel broken for %s: %s", self.task_id, exc)
                time.sleep(0.05 if left is None else min(0.05, left))
            stored = stored_reply(self._ar)
            if stored is not PENDING:
                return stored
            if left is not None and left <= 0:
                raise ResultTimeout(
                    f"request {self.request_id} has no result after {timeout} s; it may still "
                    "finish: call result() again or look it up in the ledger",
                    request_id=self.request_id)

    def done(self) -> bool:
        return bool(self._ar.ready())

    def forget(self) -> None:
        self._ar.forget()


PENDING = object()


def stored_reply(ar: AsyncResult) -> Any:
    """The stored return value of ``ar``'s task, read directly; ``PENDING`` if not ready."""
    try:
        meta = ar.backend.get_task_meta(ar.id, cache=False)
    except Exception as exc:  # noqa: BLE001 - the store being away means "not yet"
        log.debug("could not read the stored result of %s: %s", ar.id, exc)
        return PENDING
    return reply_from_meta(meta, ar.backend)


def reply_from_meta(meta: dict[str, Any], backend: Any) -> Any:
    """A task's return value from its stored meta; ``PENDING`` if not ready; raises the task's
    exception if it failed in Celery (as ``AsyncResult.get(propagate=True)`` does)."""
    status = meta.get("status")
    if status == states.SUCCESS:
        return meta.get("result")
    if status in states.READY_STATES:
        raise backend.exception_to_python(meta.get("result"))
    return PENDING


def decode_reply(reply: Any) -> ChatResult | SluiceError:
    """Turn a task's return value back into a result or a typed error."""
    if not isinstance(reply, dict) or "ok" not in reply:
        return SluiceError(f"unexpected task reply {reply!r}; are producer and worker versions "
                           "the same?")
    if reply["ok"]:
        return ChatResult.model_validate(reply["result"])
    return from_dict(reply["error"])
