"""Task events are off by default (their CPU is every request's) and on once Flower asks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _succeeded_events(gateway: Any, request_id: str, *, wait_s: float) -> list[dict[str, Any]]:
    """task-succeeded events seen for ``request_id`` while one request of it runs."""
    app, seen, results = gateway.app, [], []

    def submit() -> None:
        results.append(gateway.complete({
            "request_id": request_id, "team": "events", "feature": "flower", "model": "cheap",
            "max_tokens": 8, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": "hello"}]}, timeout=30))

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "task-succeeded" and str(event.get("uuid", "")).startswith(
                request_id + "~"):
            seen.append(event)

    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_event})
        stop = threading.Timer(wait_s, lambda: setattr(recv, "should_stop", True))
        # The receiver binds its queue as capture() starts: submit a moment later.
        later = threading.Timer(1.0, submit)
        stop.start()
        later.start()
        try:
            recv.capture(limit=None, timeout=None, wakeup=False)
        finally:
            stop.cancel()
            later.join(40)
    assert results and results[0].text  # the request itself was served either way
    return seen


def test_workers_send_no_task_events_unless_asked(gateway: Any) -> None:
    assert not gateway.app.conf.worker_send_task_events
    assert _succeeded_events(gateway, f"ev-off-{uuid.uuid4().hex[:8]}", wait_s=3) == []


def test_flower_style_enable_events_makes_tasks_visible(gateway: Any) -> None:
    app = gateway.app
    # What Flower does every few seconds (its --enable_events, on by default).
    replies = app.control.enable_events(reply=True, timeout=5)
    assert replies, "no worker answered enable_events"
    try:
        events = _succeeded_events(gateway, f"ev-on-{uuid.uuid4().hex[:8]}", wait_s=8)
        assert len(events) == 1
        # Flower shows a cut repr of the reply (log_privacy.REPR_CHARS), never the answer text
        assert events[0]["result"].startswith("{'ok': True") and "text" not in events[0]["result"]
    finally:
        app.control.disable_events(reply=True, timeout=5)
