"""A worker killed while its requests wait in a provider batch: the batch is paid for once.

The redelivered tasks find the batch's placement (workers/batch/placements.py) and poll it
instead of putting the same requests into a new batch, so the provider bills them once, and
the ledger bills each once, at the batch price.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.settings import load_settings
from queues.producer import connect
from tests.chaos.support import kill9, ledger_counts, replacement_worker, start_worker, stop
from tests.services import run_token

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
BATCH_MAX = 4
BATCH_DELAY_S = 6.0  # long enough to kill the worker while its batch runs


@pytest.fixture()
def slow_batches() -> Iterator[Any]:
    """A stand-in of this test's own whose batches take BATCH_DELAY_S to finish."""
    from workers.providers.standin import StandIn
    from workers.providers.standin.config import StandInConfig

    with StandIn(StandInConfig(batch_delay_s=BATCH_DELAY_S)) as server:
        yield server


def _creations(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/batches", 0))


def _placed(env: dict[str, str]) -> int:
    """Placements the worker recorded under this test's key prefix."""
    import redis

    client = redis.Redis.from_url(env["SLUICE_BROKER__URL"])
    try:
        pattern = env["SLUICE_BROKER__KEY_PREFIX"] + "sluice:batch-placement:*"
        return sum(1 for _ in client.scan_iter(match=pattern))
    finally:
        client.close()


def test_kill_during_a_batch_pays_for_it_once(chaos_env: dict[str, str], chaos_sessions: Any,
                                               slow_batches: Any, tmp_path: Path) -> None:
    env = {**chaos_env,
           "SLUICE_BROKER__KEY_PREFIX": f"sgbkill{run_token()}:",
           "SLUICE_PROVIDERS__OPENAI_BASE_URL": slow_batches.openai_base_url,
           "SLUICE_PROVIDERS__ANTHROPIC_BASE_URL": slow_batches.anthropic_base_url,
           "SLUICE_BATCH__POLL_INTERVAL_S": "0.2", "SLUICE_BATCH__MAX_WAIT_S": "40",
           "SLUICE_LANES__ASYNC__BATCH_MAX": str(BATCH_MAX),
           "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "300"}
    prefix = f"bkill-{uuid.uuid4().hex[:8]}-"
    log = tmp_path / "worker.log"
    first = start_worker(env, log, queues="async.api", concurrency=BATCH_MAX * 2)
    gateway = connect(load_settings(dict(env)))
    try:
        handles = [gateway.submit({
            "request_id": f"{prefix}{i}", "team": "batchkill", "feature": "nightly",
            "lane": "async", "model": "cheap", "max_tokens": 16, "tags": {"batch": "true"},
            "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Rephrase item {i}"}]})
            for i in range(BATCH_MAX)]
        deadline = time.time() + 60
        # Until the batch is created *and* its placements are written (a kill between the two
        # is a window of a few milliseconds this test does not aim at).
        while _creations(slow_batches) < 1 or _placed(env) < BATCH_MAX:
            assert time.time() < deadline, "the first worker never submitted its batch"
            time.sleep(0.05)
        kill9(first)  # the batch is at the provider, paid for, its answers not collected
        assert ledger_counts(chaos_sessions, prefix) == {"running": BATCH_MAX}
        with replacement_worker(env, log, gateway, chaos_sessions, older_than_s=10,
                                queues="async.api", concurrency=BATCH_MAX * 2):
            results = [h.result(timeout=90) for h in handles]
    finally:
        gateway.close()
        stop(first)
    assert _creations(slow_batches) == 1, "the redelivered requests went into a second batch"
    assert slow_batches.stats()["by_path"].get("/v1/chat/completions", 0) == 0
    model = load_catalogue().get("gpt-4o-mini")
    with chaos_sessions() as s:
        rows = {r.request_id: r for r in s.scalars(
            select(LedgerRow).where(LedgerRow.request_id.startswith(prefix))).all()}
    assert len(rows) == BATCH_MAX
    for result in results:
        assert result.cost == cost_of(result.usage, model, batch=True) > 0
        row = rows[result.request_id]
        assert (row.outcome, row.batch, row.cost) == ("ok", True, result.cost)
