"""Embedding money: a Batch API pack slower than the wait paid once; a cut request covered.

Before, a batch still running past ``SLUICE_BATCH__MAX_WAIT_S`` raised a retryable error: its
attempt was charged at its worst case and the retry packed the same items into a second
batch, which the provider billed again (and the first one too, when it ended). Now the task
comes back to poll the same batch (BatchPending) and the one attempt is billed exactly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

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
from workers.providers.standin.embeddings_api import tokens_of, vector_for

pytestmark = pytest.mark.integration
SMALL = load_catalogue().get("text-embedding-3-small")
GEMINI = load_catalogue().get("gemini-embedding-001")
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
               "SLUICE_PROVIDERS__GOOGLE_BASE_URL": server.gemini_base_url,
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
        own = sum(tokens_of(t) for t in req["input"])
        want = cost_of(Usage(input_uncached=own), SMALL, batch=True)
        with sessions() as s:
            row = ledger.get(s, req["request_id"])
            tried = attempt_rows.of_request(s, req["request_id"])
        assert row is not None and (row.outcome, row.cost, row.estimated_cost) == ("ok", want, 0)
        assert res.cost == want
        # One attempt however many visits it took; nothing charged at its worst case.
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "exact", want)]
        assert row.latency_ms > MAX_WAIT_S * 1000  # it did outlast the wait


def test_a_slow_gemini_batch_is_polled_again_and_billed_once_estimated(
        slow_batch_gateway: tuple[Any, Any], sessions: Any) -> None:
    gateway, standin = slow_batch_gateway
    tag = uuid.uuid4().hex[:6]
    reqs = [{"request_id": f"gbslow-{uuid.uuid4().hex}", "team": "search", "feature": "archive",
             "lane": "async", "model": GEMINI.name, "batch": True, "cache": {"mode": "bypass"},
             "input": [f"old gemini page {i}.{j} ({tag})" for j in range(2)]} for i in range(3)]
    create = f"/v1beta/models/{GEMINI.name}:asyncBatchEmbedContent"
    before = standin.stats()["by_path"].get(create, 0)
    with ThreadPoolExecutor(3) as pool:
        handles = list(pool.map(gateway.submit_embedding, reqs))
    results = [h.result(timeout=60) for h in handles]
    created = standin.stats()["by_path"].get(create, 0) - before
    assert created == 1, f"{created} provider batches for one pack: the slow one paid again"
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(GEMINI.name, t, 3072) for t in req["input"]]
        own = sum(count_text(t) for t in req["input"])
        want = cost_of(Usage(input_uncached=own), GEMINI, batch=True)
        with sessions() as s:
            row = ledger.get(s, req["request_id"])
            tried = attempt_rows.of_request(s, req["request_id"])
        # Gemini reports no count: each caller's own (our count), estimated, at half price.
        assert row is not None and (row.outcome, row.cost, row.estimated_cost) == (
            "ok", want, want)
        assert row.batch and res.cost == want and want * 2 == row.list_cost
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "estimated", want)]
        assert row.latency_ms > MAX_WAIT_S * 1000  # it did outlast the wait


def test_a_request_cut_into_calls_never_spends_past_its_reservation(
        gateway: Any, sessions: Any, standin: Any) -> None:
    """A request too big for one call (two calls) whose first call's answer is unparseable:
    that attempt is charged its worst case and retried, and the reservation must cover all
    three. The second call was admitted as if the retried first one had cost nothing, so the
    settle spent past what the reservation held (and so past a limit with room for only it)."""
    from models.db.budgets import ReservationRow, set_budget
    from models.domain.embedding_pack import chunks
    from scheduler.admission import AdmissionConfig

    feature = f"cover-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=Decimal(1))
        s.commit()
    time.sleep(AdmissionConfig().budget_cache_ttl_s + 0.2)
    texts = [f"{i} " + "lamp" + " lamp" * 7990 for i in range(38)]
    tokens = [tokens_of(t) for t in texts]
    limits = SMALL.embedding
    assert limits is not None
    assert len(chunks(tokens, limits.max_items, limits.max_call_tokens)) == 2
    standin.script_faults(["malformed"], model=SMALL.name, path="openai")
    req = {"request_id": f"ebcover-{uuid.uuid4().hex}", "team": "search", "feature": feature,
           "model": SMALL.name, "cache": {"mode": "bypass"}, "input": texts}
    result = gateway.embed(req, timeout=120)
    assert len(result.embeddings) == len(texts)
    with sessions() as s:
        tried = attempt_rows.of_request(s, req["request_id"])
        held = list(s.scalars(select(ReservationRow).where(
            ReservationRow.request_id == req["request_id"])))
        row = ledger.get(s, req["request_id"])
    assert [a.outcome for a in tried] == ["unparseable", "ok", "ok"]
    assert row is not None and row.cost == sum(a.cost for a in tried)
    (settled,) = [r for r in held if r.state == "settled"]
    assert settled.actual == row.cost
    assert settled.actual <= settled.amount, \
        f"spent {settled.actual} under a reservation of {settled.amount}"
