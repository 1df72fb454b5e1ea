"""Embedding packs on a provider Batch API slower than the task waits: paid once, billed once.

Before, a batch still running past ``SLUICE_BATCH__MAX_WAIT_S`` raised a retryable error: its
attempt was charged at its worst case and the retry packed the same items into a second
batch, which the provider billed again (and the first one too, when it ended). Now the task
comes back to poll the same batch (BatchPending) and the one attempt is billed exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from models.db import attempts as attempt_rows
from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.settings import load_settings
from models.domain.tokens import count_text
from models.domain.usage import Usage
from queues.producer import connect
from tests.services import run_token
from tests.worker_proc import celery_worker
from workers.providers.standin.embeddings_api import vector_for

pytestmark = pytest.mark.integration
SMALL = load_catalogue().get("text-embedding-3-small")
BATCH_DELAY_S, MAX_WAIT_S = 3.0, 0.5


@pytest.fixture(scope="module")
def slow_batch_gateway(integration_env: dict[str, str], tmp_path_factory: Any
                       ) -> Iterator[tuple[Any, Any]]:
    """A stand-in whose batches take BATCH_DELAY_S, a worker that waits MAX_WAIT_S for one."""
    from workers.providers.standin import StandIn
    from workers.providers.standin.config import StandInConfig

    with StandIn(StandInConfig(batch_delay_s=BATCH_DELAY_S)) as server:
        prefix = f"sgebslow{run_token()}:"
        env = {**integration_env, "SLUICE_BROKER__KEY_PREFIX": prefix,
               "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
               "SLUICE_PROVIDERS__OPENAI_BASE_URL": server.openai_base_url,
               "SLUICE_BATCH__POLL_INTERVAL_S": "0.2",
               "SLUICE_BATCH__MAX_WAIT_S": str(MAX_WAIT_S),
               "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "300"}
        log = tmp_path_factory.mktemp("ebslow") / "worker.log"
        with celery_worker(env, log, queues="async.api", name=f"ebslow-{run_token()}"):
            gw = connect(load_settings(dict(env)))
            yield gw, server
            gw.close()


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def test_a_batch_slower_than_the_wait_is_polled_again_and_billed_once(
        slow_batch_gateway: tuple[Any, Any], sessions: Any) -> None:
    gateway, standin = slow_batch_gateway
    tag = uuid.uuid4().hex[:6]
    reqs = [{"request_id": f"ebslow-{uuid.uuid4().hex}", "team": "search", "feature": "archive",
             "lane": "async", "model": SMALL.name, "batch": True, "cache": {"mode": "bypass"},
             "input": [f"old page {i}.{j} ({tag})" for j in range(2)]} for i in range(3)]
    before = standin.stats()["by_path"].get("/v1/batches", 0)
    with ThreadPoolExecutor(3) as pool:
        handles = list(pool.map(gateway.submit_embedding, reqs))
    results = [h.result(timeout=60) for h in handles]
    created = standin.stats()["by_path"].get("/v1/batches", 0) - before
    assert created == 1, f"{created} provider batches for one pack: the slow one paid again"
    assert standin.stats()["by_path"].get("/v1/embeddings", 0) == 0
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(SMALL.name, t, 1536) for t in req["input"]]
        own = sum(count_text(t) for t in req["input"])
        want = cost_of(Usage(input_uncached=own), SMALL, batch=True)
        with sessions() as s:
            row = ledger.get(s, req["request_id"])
            tried = attempt_rows.of_request(s, req["request_id"])
        assert row is not None and (row.outcome, row.cost, row.estimated_cost) == ("ok", want, 0)
        assert res.cost == want
        # One attempt however many visits it took; nothing charged at its worst case.
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "exact", want)]
        assert row.latency_ms > MAX_WAIT_S * 1000  # it did outlast the wait
