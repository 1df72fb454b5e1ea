"""Requests in a provider batch slower than the task's wait (issue 16, must-have 4).

They stay running (the handle and GET /v1/jobs say so), their reservations stay held, they are
billed when the batch answers, and a batch whose callers all cancel is cancelled at the
provider, where its unanswered requests cost nothing (the stand-in answers nothing of a batch
cancelled before its delay, and takes back what it had counted).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.db import attempts, ledger
from models.db.budgets import ReservationRow, delete_budget, set_budget
from models.domain.settings import load_settings
from tests.billed import wait_all_billed
from tests.e2e.frontdoor_support import mint, serve_frontdoor
from tests.services import run_token

pytestmark = pytest.mark.integration
BATCH_DELAY_S = 8.0  # the provider's batch: far longer than a task waits for it (1 s)
MAX_WAIT_S = 1.0


@pytest.fixture(scope="module")
def slow() -> Iterator[Any]:
    from workers.providers.standin import StandIn
    from workers.providers.standin.config import StandInConfig

    with StandIn(StandInConfig(batch_delay_s=BATCH_DELAY_S)) as server:
        yield server


@pytest.fixture(scope="module")
def env(integration_env: dict[str, str], slow: Any) -> dict[str, str]:
    return {**integration_env, "SLUICE_BROKER__KEY_PREFIX": f"sgbwait{run_token()}:",
            "SLUICE_PROVIDERS__OPENAI_BASE_URL": slow.openai_base_url,
            "SLUICE_PROVIDERS__ANTHROPIC_BASE_URL": slow.anthropic_base_url,
            "SLUICE_BATCH__POLL_INTERVAL_S": "0.2", "SLUICE_BATCH__MAX_WAIT_S": str(MAX_WAIT_S),
            "SLUICE_LANES__ASYNC__BATCH_MAX": "2", "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "300"}


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    from tests.worker_proc import celery_worker

    log = Path(tmp_path_factory.mktemp("bwait")) / "worker.log"
    with celery_worker(env, log, queues="async.api", concurrency=6,
                       name=f"bwait-{run_token()}") as proc:
        yield proc


@pytest.fixture(scope="module")
def door(env: dict[str, str], worker: Any) -> Iterator[str]:
    with serve_frontdoor(load_settings(env)) as url:
        yield url



@pytest.fixture()
def feature(sessions: Any) -> Iterator[str]:
    """A feature of this test alone, with a budget, so each request holds a reservation."""
    name = f"bw-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "feature", name, "total", hard=Decimal("5"))
        s.commit()
    time.sleep(1.2)  # the door's budget list is cached for a second
    yield name
    with sessions() as s:
        delete_budget(s, "feature", name, "total")
        s.commit()


def submit(door: str, key: str, feature: str, model: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = httpx.post(f"{door}/v1/chat/completions", timeout=10, json={
            "model": model, "max_tokens": 16,
            "messages": [{"role": "user", "content": f"Rephrase item {i} {uuid.uuid4().hex[:6]}"}]},
            headers={"authorization": f"Bearer {key}", "x-sluice-lane": "async",
                     "x-sluice-feature": feature, "x-sluice-batch": "true"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def job(door: str, key: str, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{door}/v1/jobs/{job_id}", timeout=10,
                          headers={"authorization": f"Bearer {key}"}).json())


def reservations(sessions: Any, ids: list[str]) -> list[Any]:
    from sqlalchemy import select

    with sessions() as s:
        return list(s.scalars(select(ReservationRow).where(ReservationRow.request_id.in_(ids))))


def wait_in_batch(door: str, key: str, ids: list[str], slow: Any, created_before: int) -> None:
    """Until the jobs run and their provider batch exists (its placements are written just
    after the batch is created), then past the task's first wait."""
    deadline = time.monotonic() + 30
    while (any(job(door, key, i)["status"] != "running" for i in ids)
           or batches(slow) <= created_before):
        assert time.monotonic() < deadline, "the batch was never submitted"
        time.sleep(0.1)
    time.sleep(MAX_WAIT_S + 0.5)


def batches(slow: Any) -> int:
    by = slow.stats()["by_path"]
    return int(by.get("/v1/batches", 0)) + int(by.get("/v1/messages/batches", 0))


def wait_done(door: str, key: str, ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [job(door, key, i) for i in ids]
        if all(j["status"] in ("completed", "failed", "cancelled") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_a_batch_slower_than_the_wait_stays_running_and_is_billed_when_it_answers(
        door: str, pg_url: str, sessions: Any, slow: Any, feature: str, model: str) -> None:
    key = mint(pg_url, "catalog")
    chat_before = slow.stats()["by_path"]
    ids = submit(door, key, feature, model, 2)
    time.sleep(MAX_WAIT_S * 3 + 1)  # well past the task's wait, well before the batch ends
    states = [job(door, key, i)["status"] for i in ids]
    assert states == ["running", "running"], states  # was "failed", billed $0
    held = reservations(sessions, ids)
    assert len(held) == 2 and all(r.state == "open" for r in held)
    # Held for as long as the batch may take, not the lane's lease.
    assert all((r.expires_at - r.created_at).total_seconds() > 3600 for r in held)
    with sessions() as s:
        rows = [ledger.get(s, i) for i in ids]
        assert [r.outcome if r else None for r in rows] == ["running", "running"]
    jobs = wait_done(door, key, ids)
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs
    after = slow.stats()["by_path"]
    direct = "/v1/chat/completions" if model.startswith("gpt") else "/v1/messages"
    assert after.get(direct, 0) == chat_before.get(direct, 0)  # never answered directly too
    # "completed" is the pushed answer, which comes before its settle: read the rows billed.
    wait_all_billed(ids)
    with sessions() as s:
        for i in ids:
            row = ledger.get(s, i)
            assert row is not None and (row.outcome, row.batch) == ("ok", True)
            assert row.cost > 0 and row.list_cost == 2 * row.cost  # the batch price
            # One provider attempt however many times the task came back to poll it.
            (attempt,) = attempts.of_request(s, i)
            assert (attempt.outcome, attempt.billing, attempt.cost) == ("ok", "exact", row.cost)
    for r in reservations(sessions, ids):
        assert r.state == "settled" and r.actual > 0




@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_cancelling_every_caller_of_a_pending_batch_cancels_it_at_the_provider(
        door: str, pg_url: str, sessions: Any, slow: Any, feature: str, model: str) -> None:
    key = mint(pg_url, "catalog")
    auth = {"authorization": f"Bearer {key}"}
    cancels = "/cancel"
    before = slow.stats()
    created = batches(slow)
    ids = submit(door, key, feature, model, 2)
    wait_in_batch(door, key, ids, slow, created)
    for i in ids:
        gone = httpx.delete(f"{door}/v1/jobs/{i}", headers=auth, timeout=10)
        assert gone.status_code == 202, gone.text  # was 409 job_started
        assert gone.json()["status"] == "cancelling"
    jobs = wait_done(door, key, ids, timeout=BATCH_DELAY_S)  # ends before the batch would
    assert [j["status"] for j in jobs] == ["cancelled", "cancelled"], jobs
    after = slow.stats()
    cancelled = sum(v for p, v in after["by_path"].items() if p.endswith(cancels)) - sum(
        v for p, v in before["by_path"].items() if p.endswith(cancels))
    assert cancelled >= 1
    # The provider billed nothing for the cancelled batch, and neither did the ledger.
    assert after["tokens"]["prompt"] == before["tokens"]["prompt"]
    with sessions() as s:
        for i in ids:
            row = ledger.get(s, i)
            assert row is not None and (row.outcome, row.error_code, row.cost) == (
                "error", "cancelled", 0)
            (attempt,) = attempts.of_request(s, i)
            assert (attempt.outcome, attempt.cost) == ("cancelled", 0)
    assert [r.state for r in reservations(sessions, ids)] == ["released", "released"]



def test_a_gateway_handle_keeps_waiting_for_a_slow_batch(env: dict[str, str], worker: Any,
                                                         sessions: Any, feature: str) -> None:
    from models.domain.errors import ResultTimeout
    from queues.producer import connect

    gateway = connect(load_settings(env))
    try:
        handle = gateway.submit({
            "team": "catalog", "feature": feature, "lane": "async", "model": "gpt-4o-mini",
            "max_tokens": 16, "tags": {"batch": "true"}, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Rephrase {uuid.uuid4().hex[:6]}"}]})
        with pytest.raises(ResultTimeout):  # still running; it used to fail after 1 s
            handle.result(timeout=MAX_WAIT_S * 3 + 1)
        result = handle.result(timeout=60)
    finally:
        gateway.close()
    assert result.text and result.cost > 0 and result.list_cost == 2 * result.cost
    with sessions() as s:
        row = ledger.get(s, result.request_id)
        assert row is not None and (row.outcome, row.batch, row.cost) == ("ok", True, result.cost)


def test_a_batch_whose_other_callers_still_wait_runs_on_and_bills_the_cancelled_one(
        door: str, pg_url: str, sessions: Any, slow: Any, feature: str) -> None:
    key = mint(pg_url, "catalog")
    cancels_before = sum(v for p, v in slow.stats()["by_path"].items() if p.endswith("/cancel"))
    created = batches(slow)
    ids = submit(door, key, feature, "gpt-4o-mini", 2)
    wait_in_batch(door, key, ids, slow, created)
    gone = httpx.delete(f"{door}/v1/jobs/{ids[0]}", timeout=10,
                        headers={"authorization": f"Bearer {key}"})
    assert gone.status_code == 202, gone.text
    jobs = wait_done(door, key, ids)
    # The provider cannot cancel one request of a batch: it answers and bills both, so both
    # are answered and billed, at the batch price.
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs
    assert sum(v for p, v in slow.stats()["by_path"].items()
               if p.endswith("/cancel")) == cancels_before
    wait_all_billed(ids)  # "completed" is the pushed answer, which comes before its settle
    with sessions() as s:
        for i in ids:
            row = ledger.get(s, i)
            assert row is not None and (row.outcome, row.batch) == ("ok", True) and row.cost > 0
