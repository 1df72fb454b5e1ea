"""Async Messages through a provider Batch API: ``x-sluice-lane: async`` and
``x-sluice-batch: true`` on ``/v1/messages`` go out as one Anthropic Message Batch, billed at
half price, and the jobs answer in Anthropic's shape."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.settings import load_settings
from models.domain.usage import Usage
from tests.e2e.frontdoor_support import row, serve_frontdoor
from tests.e2e.messages_support import CLAUDE
from tests.services import run_token

pytestmark = pytest.mark.integration
BATCH_MAX = 4


@pytest.fixture(scope="module")
def batch_door(integration_env: dict[str, str], tmp_path_factory: Any,
               gateway: Any) -> Iterator[str]:
    """A door and an async worker of their own broker prefix, with a short batch window."""
    from tests.worker_proc import celery_worker

    env = {**integration_env, "SLUICE_BROKER__KEY_PREFIX": f"sgmbatch{run_token()}:",
           "SLUICE_BATCH__POLL_INTERVAL_S": "0.05",
           "SLUICE_LANES__ASYNC__BATCH_MAX": str(BATCH_MAX),
           "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "400"}
    log = tmp_path_factory.mktemp("messages-batch") / "worker.log"
    with celery_worker(env, log, queues="async.api", concurrency=BATCH_MAX * 3,
                       name=f"mbatch-{run_token()}"):
        with serve_frontdoor(load_settings(env)) as url:
            yield url


def test_async_messages_share_one_message_batch_at_half_price(
        batch_door: str, team_key: str, sessions: Any, standin: Any) -> None:
    headers = {"x-api-key": team_key, "anthropic-version": "2023-06-01",
               "x-sluice-lane": "async", "x-sluice-batch": "true",
               "x-sluice-cache-mode": "bypass"}
    before = standin.stats()["by_path"].get("/v1/messages/batches", 0)
    jobs = []
    for _ in range(BATCH_MAX):
        r = httpx.post(batch_door + "/v1/messages", headers=headers, timeout=30, json={
            "model": CLAUDE, "max_tokens": 30,
            "system": [{"type": "text", "text": "You write SEO copy.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": f"Rephrase: towel {uuid.uuid4().hex}"}]})
        assert r.status_code == 202, r.text
        jobs.append(r.json()["id"])
    spec = load_catalogue().get(CLAUDE)
    for job in jobs:
        deadline = time.monotonic() + 60
        while (polled := httpx.get(f"{batch_door}/v1/jobs/{job}", headers=headers).json()
               )["status"] != "completed":
            assert polled["status"] in ("queued", "running"), polled
            assert time.monotonic() < deadline
            time.sleep(0.1)
        message = polled["result"]
        assert message["type"] == "message" and message["content"][0]["text"]
        r = row(sessions, job)
        assert r.batch is True and r.lane == "async"
        usage = Usage(input_uncached=r.input_uncached, output=r.output)
        assert r.cost == cost_of(usage, spec, batch=True) == cost_of(usage, spec) / 2 > 0
        assert message["usage"]["input_tokens"] == r.input_uncached
    assert standin.stats()["by_path"].get("/v1/messages/batches", 0) - before == 1
