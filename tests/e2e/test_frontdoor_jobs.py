"""Async-lane jobs through the front door: a job to poll, its owner only, and cancelling it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from models.db import ledger
from tests.e2e.frontdoor_support import mint, row, user

pytestmark = pytest.mark.integration


def test_async_lane_returns_a_job_to_poll(client: openai.OpenAI, door: str, pg_url: str,
                                          sessions: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="cheap", max_tokens=20, messages=[user("Write a tagline for a kettle")],
        extra_headers={"x-sluice-lane": "async", "x-sluice-feature": "taglines"})
    assert raw.status_code == 202
    job = raw.http_response.json()
    assert job["object"] == "sluice.job" and job["status"] in ("queued", "completed")
    deadline = time.monotonic() + 30
    while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/jobs/{job['id']}", cast_to=object)  # type: ignore[assignment]
    assert job["status"] == "completed", job
    assert job["result"]["choices"][0]["message"]["content"]
    r = row(sessions, job["id"])
    assert (r.lane, r.feature, r.team) == ("async", "taglines", "catalog")
    assert job["result"]["usage"]["completion_tokens"] == r.output
    stranger = httpx.get(f"{door}/v1/jobs/{job['id']}",
                         headers={"authorization": f"Bearer {mint(pg_url, 'other-team')}"})
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "job_not_found"


def test_a_queued_job_can_be_cancelled_and_costs_nothing(client: openai.OpenAI, door: str,
                                                        gateway: Any, sessions: Any,
                                                        standin: Any, team_key: str) -> None:
    auth = {"authorization": f"Bearer {team_key}"}
    control = gateway.app.control
    # The workers stop taking async jobs for a moment, so this one waits in its queue.
    control.cancel_consumer("async.api", reply=True, timeout=10)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="cheap", max_tokens=20, messages=[user("Write a tagline for a teapot")],
            extra_headers={"x-sluice-lane": "async", "x-sluice-feature": "cancelled-jobs"})
        job_id = raw.http_response.json()["id"]
        calls = standin.stats()["by_path"].get("/v1/chat/completions", 0)
        gone = httpx.delete(f"{door}/v1/jobs/{job_id}", headers=auth, timeout=10)
        assert gone.status_code == 202 and gone.json()["status"] == "cancelling"
        polled = httpx.get(f"{door}/v1/jobs/{job_id}", headers=auth, timeout=10)
        assert polled.json()["status"] == "cancelling"
    finally:
        control.add_consumer("async.api", reply=True, timeout=10)
    deadline = time.monotonic() + 30
    job = polled.json()
    while job["status"] == "cancelling" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = httpx.get(f"{door}/v1/jobs/{job_id}", headers=auth, timeout=10).json()
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled", job
    assert standin.stats()["by_path"].get("/v1/chat/completions", 0) == calls  # never sent
    r = row(sessions, job_id)
    assert (r.outcome, r.error_code, r.cost, r.feature) == ("error", "cancelled", 0,
                                                           "cancelled-jobs")
    # A finished job cannot be cancelled; another team's job is not found.
    again = httpx.delete(f"{door}/v1/jobs/{job_id}", headers=auth, timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert httpx.delete(f"{door}/v1/jobs/nope-{uuid.uuid4().hex}", headers=auth,
                        timeout=10).status_code == 404
    # A job a worker has started (the provider is slow to answer) is not cancelled: a 409.
    standin.script_faults(["timeout=3"], path="openai", model="gpt-4o-mini")
    busy = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=8, messages=[user("Tagline for a mug")],
        extra_headers={"x-sluice-lane": "async"}).http_response.json()["id"]
    deadline = time.monotonic() + 20
    while not _has_row(sessions, busy):
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    # Its claim (the ledger row) says it runs: the provider holds it for 3 s more.
    assert httpx.get(f"{door}/v1/jobs/{busy}", headers=auth,
                     timeout=10).json()["status"] == "running"
    late = httpx.delete(f"{door}/v1/jobs/{busy}", headers=auth, timeout=10)
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_started"


def _has_row(sessions: Any, request_id: str) -> bool:
    with sessions() as s:
        return ledger.get(s, request_id) is not None


def test_a_cancel_that_loses_the_race_to_a_worker_is_refused(
        client: openai.OpenAI, door: str, sessions: Any, standin: Any, team_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from queues.http.context import FrontDoor

    # A DELETE reads the ledger, then sets its mark; a worker may claim the job in between.
    # Played here by a door whose ledger read always comes just before the claim.
    monkeypatch.setattr(FrontDoor, "started", lambda self, *args: False)
    auth = {"authorization": f"Bearer {team_key}"}
    standin.script_faults(["timeout=3"], path="openai", model="gpt-4o-mini")
    busy = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=8, messages=[user("Tagline for a jug")],
        extra_headers={"x-sluice-lane": "async"}).http_response.json()["id"]
    deadline = time.monotonic() + 20
    while not _has_row(sessions, busy):
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    time.sleep(0.3)  # the worker has passed its cancel check: the provider holds the call
    late = httpx.delete(f"{door}/v1/jobs/{busy}", headers=auth, timeout=10)
    # Not "cancelling": the job runs and is billed, and its caller is told so.
    assert late.status_code == 409 and late.json()["error"]["code"] == "job_started", late.text
    status = httpx.get(f"{door}/v1/jobs/{busy}", headers=auth, timeout=10).json()["status"]
    assert status != "cancelling"
    deadline = time.monotonic() + 30
    while row(sessions, busy).outcome == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert row(sessions, busy).error_code != "cancelled"
