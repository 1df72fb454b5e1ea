"""Task events are off by default (their CPU is every request's) and on once Flower asks."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _succeeded_events(gateway: Any, request_id: str, *, wait_s: float) -> list[dict[str, Any]]:
    """task-succeeded events seen for ``request_id`` while one request of it runs."""
    app = gateway.app
    seen: list[dict[str, Any]] = []
    results: list[Any] = []

    def submit() -> None:
        results.append(gateway.complete({
            "request_id": request_id, "team": "events", "feature": "flower", "model": "cheap",
            "max_tokens": 8, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": "hello"}]}, timeout=30))

    lock, submitted = threading.Lock(), threading.Event()

    def submit_once() -> None:
        with lock:
            if submitted.is_set():
                return
            submitted.set()
        threading.Thread(target=submit, daemon=True).start()

    def on_event(event: dict[str, Any]) -> None:
        # The first event (the workers' answer to wakeup) shows the receiver is bound.
        submit_once()
        if event.get("type") == "task-succeeded" and str(event.get("uuid", "")).startswith(
                request_id + "~"):
            seen.append(event)
            recv.should_stop = True

    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_event})
        stop = threading.Timer(wait_s, lambda: setattr(recv, "should_stop", True))
        fallback = threading.Timer(3.0, submit_once)  # should no worker answer the wakeup
        stop.start()
        fallback.start()
        try:
            recv.capture(limit=None, timeout=None, wakeup=True)
        finally:
            stop.cancel()
            fallback.cancel()
    deadline = time.time() + 40
    while not results and time.time() < deadline:
        time.sleep(0.05)
    assert results and results[0].text  # the request itself was served either way
    return seen


def test_workers_send_no_task_events_unless_asked(gateway: Any) -> None:
    assert not gateway.app.conf.worker_send_task_events
    assert _succeeded_events(gateway, f"ev-off-{uuid.uuid4().hex[:8]}", wait_s=6) == []


def test_flower_style_enable_events_makes_tasks_visible(gateway: Any) -> None:
    app = gateway.app
    # What Flower does every few seconds (its --enable_events, on by default).
    replies = app.control.enable_events(reply=True, timeout=5)
    assert replies, "no worker answered enable_events"
    try:
        events = _succeeded_events(gateway, f"ev-on-{uuid.uuid4().hex[:8]}", wait_s=20)
        assert len(events) == 1
        # Flower shows a cut repr of the reply (log_privacy.REPR_CHARS), never the answer text
        assert events[0]["result"].startswith("{'ok': True") and "text" not in events[0]["result"]
    finally:
        app.control.disable_events(reply=True, timeout=5)
