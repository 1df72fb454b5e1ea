"""Poison messages on a lane queue are parked on `sluice.dead` with a reason; the worker lives."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange

from models.domain.settings import load_settings
from queues.app import create_app
from queues.dead_letter import drain
from queues.names import TASK_API

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
QUEUE = "interactive.api"


def _transport_options(settings: Any) -> dict[str, Any]:
    # The session's broker keys carry a per-run prefix: publish under it or no worker sees it.
    prefix = settings.broker.key_prefix
    return {"global_keyprefix": prefix} if prefix else {}


def _publish_raw(settings: Any, body: Any, *, headers: dict[str, Any] | None = None,
                 content_type: str = "application/json", serializer: str | None = None) -> None:
    with Connection(settings.broker.url,
                    transport_options=_transport_options(settings)) as conn:
        producer = conn.Producer()
        kwargs: dict[str, Any] = {"serializer": serializer} if serializer else {
            "content_type": content_type, "content_encoding": "utf-8"}
        producer.publish(body, exchange=Exchange("sluice", type="direct"), routing_key=QUEUE,
                         headers=headers or {}, **kwargs)


def _task_headers(name: str) -> dict[str, Any]:
    tid = str(uuid.uuid4())
    return {"lang": "py", "task": name, "id": tid, "root_id": tid, "parent_id": None,
            "group": None, "argsrepr": "", "kwargsrepr": "", "origin": "chaos",
            "retries": 0, "eta": None, "expires": None, "timelimit": [None, None]}


def test_poison_messages_are_parked_with_a_reason(integration_env: dict[str, str],
                                                  celery_worker_proc: Any, gateway: Any) -> None:
    settings = load_settings(dict(integration_env))
    app = create_app(settings, name="chaos-dead-letter")
    try:
        drain(app, timeout=0.2)  # start from an empty dead-letter queue
        marker = uuid.uuid4().hex[:8]
        # 1. Not JSON at all (declared as JSON, so kombu fails to decode it).
        _publish_raw(settings, f"{{not json {marker}".encode(), content_type="application/json")
        # 2. A well-formed task message naming a task no worker knows.
        _publish_raw(settings, [[{"marker": marker}], {}, {}],
                     headers=_task_headers("sluice.no_such_task"), serializer="json")
        # 3. The right task, but its argument is not an envelope.
        _publish_raw(settings, [[{"marker": marker, "request": {"request_id": f"dl-{marker}"}}],
                                {}, {}], headers=_task_headers(TASK_API), serializer="json")
        parked: list[dict[str, Any]] = []
        deadline = time.time() + 30
        while len(parked) < 3 and time.time() < deadline:
            parked += [p for p in drain(app, timeout=0.5) if marker in str(p.get("body"))]
        reasons = sorted(p["reason"] for p in parked)
        assert len(parked) == 3, f"parked so far: {parked}"
        assert any(r.startswith("undecodable message") for r in reasons), reasons
        assert any("unknown task 'sluice.no_such_task'" in r for r in reasons), reasons
        assert any("undecodable task message" in r for r in reasons), reasons
        assert all(p["source_queue"] == QUEUE for p in parked), parked
        assert celery_worker_proc.poll() is None, "the worker died on a poison message"
        # ...and it still serves ordinary requests.
        result = gateway.complete({"request_id": f"dl-ok-{marker}", "team": "t",
                                   "feature": "dead-letter", "model": "cheap", "max_tokens": 8,
                                   "cache": {"mode": "bypass"},
                                   "messages": [{"role": "user", "content": "still there?"}]},
                                  timeout=30)
        assert result.text
    finally:
        app.close()
