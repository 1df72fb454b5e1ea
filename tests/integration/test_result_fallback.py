"""A result stored without its pub/sub push (Redis restarted mid-wait) still reaches its waiter."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from models.domain.errors import ResultTimeout, ValidationError
from models.domain.settings import load_settings
from queues.app import create_app
from queues.envelope import error_reply
from queues.handle import PUSH_SLICE_S, TaskHandle
from queues.http.waiter import ResultWaiter, prepare_app

pytestmark = pytest.mark.integration


@pytest.fixture()
def app(redis_db_url: str) -> Any:
    settings = load_settings({"SLUICE_BROKER__URL": redis_db_url,
                              "SLUICE_BROKER__RESULT_BACKEND": redis_db_url,
                              "SLUICE_BROKER__KEY_PREFIX": f"sgfallback{uuid.uuid4().hex[:6]}:"})
    celery = prepare_app(create_app(settings, name="fallback-test"))
    yield celery
    celery.close()


def _store_silently(app: Any, task_id: str, reply: dict[str, Any], after_s: float) -> None:
    """Write the task's stored result as a worker would, but publish nothing."""
    def write() -> None:
        time.sleep(after_s)
        meta = {"status": "SUCCESS", "result": reply, "traceback": None, "children": [],
                "date_done": None, "task_id": task_id}
        app.backend.client.set(app.backend.get_key_for_task(task_id), app.backend.encode(meta))
    threading.Thread(target=write, daemon=True).start()


def test_handle_reads_the_stored_result_when_the_push_is_lost(app: Any) -> None:
    task_id = f"fallback-{uuid.uuid4().hex}"
    ar = app.AsyncResult(task_id)
    app.backend.on_task_call(None, task_id)  # subscribe, as send_task does
    handle = TaskHandle(ar, request_id=task_id)
    _store_silently(app, task_id, error_reply(task_id, ValidationError("bad max_tokens",
                                                                       field="max_tokens")), 0.2)
    t0 = time.monotonic()
    with pytest.raises(ValidationError) as err:
        handle.result(timeout=3 * PUSH_SLICE_S + 2)
    waited = time.monotonic() - t0
    assert err.value.field == "max_tokens"
    assert 0.2 <= waited < 2 * PUSH_SLICE_S + 1, waited


def test_handle_still_times_out_when_nothing_is_stored(app: Any) -> None:
    task_id = f"fallback-{uuid.uuid4().hex}"
    handle = TaskHandle(app.AsyncResult(task_id), request_id=task_id)
    t0 = time.monotonic()
    with pytest.raises(ResultTimeout, match=task_id):
        handle.result(timeout=1.5)
    assert 1.4 <= time.monotonic() - t0 < 4


def test_front_door_waiter_reads_the_stored_result_when_the_push_is_lost(app: Any) -> None:
    waiter = ResultWaiter(app, threads=2)
    assert waiter.pushes, "the Redis result store pushes results"
    task_id = f"fallback-{uuid.uuid4().hex}"

    async def main() -> float:
        loop = asyncio.get_running_loop()
        handle = TaskHandle(app.AsyncResult(task_id), request_id=task_id)
        watch = await asyncio.to_thread(waiter.watch, handle, loop, 10.0)
        _store_silently(app, task_id, error_reply(task_id, ValidationError(
            "bad team", field="team")), 0.2)
        t0 = time.monotonic()
        with pytest.raises(ValidationError, match="bad team"):
            await waiter.wait(watch, 3 * PUSH_SLICE_S + 2)
        return time.monotonic() - t0

    waited = _run(waiter, main)
    assert waited < 2 * PUSH_SLICE_S + 1.5, waited
    assert not waiter._watching, "a settled watch is forgotten"


def test_a_push_that_lands_before_a_fresh_watch_registers_is_not_lost(app: Any) -> None:
    # A door-minted request id skips the read of the result store (no earlier run can have
    # stored a result): a reply pushed between send_task and watch must still arrive, from
    # Celery's buffer of pushes for results nobody waited on yet, not from the slow fallback.
    waiter = ResultWaiter(app, threads=2)
    first, task_id = f"warm-{uuid.uuid4().hex}", f"fresh-{uuid.uuid4().hex}"

    async def main() -> float:
        loop = asyncio.get_running_loop()
        # The drainer runs in a door that has served before (started by a first watch).
        await asyncio.to_thread(waiter.watch, TaskHandle(app.AsyncResult(first),
                                                         request_id=first), loop, 10.0)
        # Subscribe, as send_task does through on_task_call; directly, since on_task_call
        # skips it in a process where Celery believes a join would block (set process-wide
        # when a worker's pool is built in it, as some earlier test in a full run does).
        app.backend.result_consumer.consume_from(task_id)
        app.backend.store_result(task_id, error_reply(task_id, ValidationError(
            "early bird", field="team")), "SUCCESS")  # stored and pushed, as a worker does
        await asyncio.sleep(0.3)  # the drainer has read the push by now
        t0 = time.monotonic()
        watch = await asyncio.to_thread(waiter.watch, TaskHandle(
            app.AsyncResult(task_id), request_id=task_id), loop, 10.0, fresh=True)
        with pytest.raises(ValidationError, match="early bird"):
            await waiter.wait(watch, 3 * PUSH_SLICE_S + 2)
        return time.monotonic() - t0

    waited = _run(waiter, main)
    assert waited < min(0.5, PUSH_SLICE_S / 2), waited


def test_a_push_buffered_between_the_buffer_check_and_the_registration_is_not_lost(
        app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The drainer reads the push while the watching thread is inside ``then``: past Celery's
    # buffer check, before the waiter is registered, so Celery buffers it. Forced here by
    # buffering it right after the check; before the fix only the 1 s stored-result read
    # could settle it, and nothing is stored here.
    waiter = ResultWaiter(app, threads=2)
    task_id = f"gap-{uuid.uuid4().hex}"
    meta = {"status": "SUCCESS", "result": error_reply(task_id, ValidationError(
        "in the gap", field="team")), "traceback": None, "children": [], "task_id": task_id}
    check = app.backend._maybe_resolve_from_buffer
    calls = []

    def check_then_buffer(result: Any) -> None:
        calls.append(result.id)
        try:
            check(result)
        finally:
            if len(calls) == 1:  # only the check inside ``then``
                app.backend._pending_messages.put(task_id, meta)

    monkeypatch.setattr(app.backend, "_maybe_resolve_from_buffer", check_then_buffer)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        watch = await asyncio.to_thread(waiter.watch, TaskHandle(
            app.AsyncResult(task_id), request_id=task_id), loop, 10.0, fresh=True)
        with pytest.raises(ValidationError, match="in the gap"):
            await waiter.wait(watch, 0.8 * PUSH_SLICE_S)  # before any stored-result read
        return time.monotonic() - t0

    waited = _run(waiter, main)
    assert waited < 0.8 * PUSH_SLICE_S, waited


def _run(waiter: ResultWaiter, main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    """Run ``main`` on a fresh event loop, then close the waiter; what ``main`` measured."""
    try:
        return asyncio.run(main())
    finally:
        waiter.close()
