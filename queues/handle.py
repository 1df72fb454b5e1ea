"""Handles returned by ``submit()``: wait for the result, await it, or forget it."""

from __future__ import annotations

import asyncio
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from models.domain.errors import ResultTimeout, SluiceError, from_dict
from models.domain.result import ChatResult


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

    def __init__(self, async_result: AsyncResult, request_id: str | None = None) -> None:
        #: The Celery task id: the request id scoped to its tenant (queues.envelope.task_id_for).
        self.task_id = str(async_result.id)
        self.request_id = request_id or self.task_id
        self._ar = async_result
        self._cached: ChatResult | SluiceError | None = None

    def result(self, timeout: float | None = None) -> ChatResult:
        if self._cached is None:
            try:
                # Polling result stores (memory, database) are checked every `interval` seconds;
                # Redis pushes results, so the interval does not matter there.
                reply = self._ar.get(timeout=timeout, propagate=True, interval=0.005,
                                     disable_sync_subtasks=False)
            except CeleryTimeout:
                raise ResultTimeout(
                    f"request {self.request_id} has no result after {timeout} s; it may still "
                    "finish: call result() again or look it up in the ledger",
                    request_id=self.request_id) from None
            self._cached = decode_reply(reply)
        if isinstance(self._cached, SluiceError):
            raise self._cached
        return self._cached

    def done(self) -> bool:
        return bool(self._ar.ready())

    def forget(self) -> None:
        self._ar.forget()


def decode_reply(reply: Any) -> ChatResult | SluiceError:
    """Turn a task's return value back into a result or a typed error."""
    if not isinstance(reply, dict) or "ok" not in reply:
        return SluiceError(f"unexpected task reply {reply!r}; are producer and worker versions "
                           "the same?")
    if reply["ok"]:
        return ChatResult.model_validate(reply["result"])
    return from_dict(reply["error"])
