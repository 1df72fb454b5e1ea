"""Issue 16 leftovers on pending provider batches, on PostgreSQL and a real worker.

- Cancelling every caller of an embedding pack that waits in a provider batch cancels that
  batch at the provider (chat batches did; embedding packs ran on and were billed).
- A pending batch attempt the ledger cannot mark ``pending`` (a database error) ends the task
  in a typed LedgerError, the attempt charged at its worst case: before, the raw database
  error escaped the task, leaving the row ``running`` and its caller an untyped failure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from models.db import attempts as attempt_rows
from models.db import ledger
from models.db.budgets import ReservationRow, set_budget
from models.db.engine import make_engine, session_factory
from models.domain.catalogue import load_catalogue
from models.domain.errors import Cancelled, LedgerError
from models.domain.settings import load_settings
from queues.producer import connect
from scheduler.admission import AdmissionConfig
from tests.services import run_token
from tests.worker_proc import celery_worker

pytestmark = pytest.mark.integration
SMALL = load_catalogue().get("text-embedding-3-small")
GEMINI = load_catalogue().get("gemini-embedding-001")
#: Where each provider's embedding batches are created.
CREATE = {SMALL.name: "/v1/batches",
          GEMINI.name: f"/v1beta/models/{GEMINI.name}:asyncBatchEmbedContent"}
BATCH_DELAY_S, MAX_WAIT_S = 30.0, 0.5  # the batch far outlasts a task's wait


@pytest.fixture(scope="module")
def slow(integration_env: dict[str, str], tmp_path_factory: Any) -> Iterator[tuple[Any, Any]]:
    """A stand-in whose batches take BATCH_DELAY_S, a worker that waits MAX_WAIT_S for one."""
    from workers.providers.standin import StandIn
    from workers.providers.standin.config import StandInConfig

    with StandIn(StandInConfig(batch_delay_s=BATCH_DELAY_S)) as server:
        prefix = f"sgleft{run_token()}:"
        env = {**integration_env, "SLUICE_BROKER__KEY_PREFIX": prefix,
               "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
               "SLUICE_PROVIDERS__OPENAI_BASE_URL": server.openai_base_url,
               "SLUICE_PROVIDERS__GOOGLE_BASE_URL": server.gemini_base_url,
               "SLUICE_BATCH__POLL_INTERVAL_S": "0.2",
               "SLUICE_BATCH__MAX_WAIT_S": str(MAX_WAIT_S),
               "SLUICE_LANES__ASYNC__BATCH_MAX": "1",
               "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "300"}
        log = tmp_path_factory.mktemp("left") / "worker.log"
        with celery_worker(env, log, queues="async.api", name=f"left-{run_token()}"):
            gw = connect(load_settings(dict(env)))
            yield gw, server
            gw.close()


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def _batches(server: Any, model: str = SMALL.name) -> int:
    return int(server.stats()["by_path"].get(CREATE[model], 0))


def _cancels(server: Any) -> int:
    return sum(v for p, v in server.stats()["by_path"].items()
               if p.endswith(("/cancel", ":cancel")))


@pytest.mark.parametrize("model", [SMALL.name, GEMINI.name])
def test_cancelling_every_caller_of_a_pending_embedding_pack_cancels_its_batch(
        slow: tuple[Any, Any], sessions: Any, model: str) -> None:
    gateway, server = slow
    tag = uuid.uuid4().hex[:6]
    feature = f"ebcancel-{tag}"
    with sessions() as s:  # a budget, so each request holds a reservation
        set_budget(s, "feature", feature, "total", hard=Decimal(1))
        s.commit()
    time.sleep(AdmissionConfig().budget_cache_ttl_s + 0.2)
    reqs = [{"request_id": f"ebcancel-{uuid.uuid4().hex}", "team": "search",
             "feature": feature, "lane": "async", "model": model, "batch": True,
             "cache": {"mode": "bypass"}, "input": [f"page {i}.{j} ({tag})" for j in range(2)]}
            for i in range(2)]
    created, cancels = _batches(server, model), _cancels(server)
    billed = server.stats()["tokens"]["prompt"]
    with ThreadPoolExecutor(2) as pool:  # packed together: one line of one provider batch
        handles = list(pool.map(gateway.submit_embedding, reqs))
    deadline = time.monotonic() + 30
    while _batches(server, model) == created:
        assert time.monotonic() < deadline, "the pack's batch was never submitted"
        time.sleep(0.1)
    assert _batches(server, model) == created + 1
    time.sleep(MAX_WAIT_S + 0.5)  # past the first wait: the tasks poll their pending batch
    for h in handles:
        assert gateway.cancel(h.task_id)
    for h in handles:
        # Ends long before the batch would (it would answer after BATCH_DELAY_S, billed).
        with pytest.raises(Cancelled):
            h.result(timeout=BATCH_DELAY_S / 2)
    assert _cancels(server) == cancels + 1, "the pack's batch was not cancelled at the provider"
    assert server.stats()["tokens"]["prompt"] == billed  # the provider billed nothing of it
    with sessions() as s:
        for req in reqs:
            rid = req["request_id"]
            row = ledger.get(s, rid)
            assert row is not None and (row.outcome, row.error_code, row.cost) == (
                "error", "cancelled", 0)
            assert [(a.outcome, a.cost) for a in attempt_rows.of_request(s, rid)] == [
                ("cancelled", 0)]
            held = list(s.scalars(select(ReservationRow).where(
                ReservationRow.request_id == rid)))
            assert held and all(r.state != "open" for r in held)


@pytest.fixture()
def pend_fails(sessions: Any) -> Iterator[str]:
    """PostgreSQL refuses to mark attempts of requests named ``<prefix>*`` pending."""
    prefix = f"pendfail{uuid.uuid4().hex[:6]}-"
    fn = f"refuse_{prefix[:-1]}"
    with sessions() as s:
        s.execute(text(f"CREATE FUNCTION {fn}() RETURNS trigger AS $$ BEGIN "
                       "RAISE EXCEPTION 'pending refused by the test'; END $$ LANGUAGE plpgsql"))
        s.execute(text(f"CREATE TRIGGER {fn} BEFORE UPDATE ON attempts FOR EACH ROW "
                       f"WHEN (NEW.outcome = 'pending' AND NEW.request_id LIKE '{prefix}%') "
                       f"EXECUTE FUNCTION {fn}()"))
        s.commit()
    yield prefix
    with sessions() as s:
        s.execute(text(f"DROP TRIGGER IF EXISTS {fn} ON attempts"))
        s.execute(text(f"DROP FUNCTION IF EXISTS {fn}()"))
        s.commit()


def test_a_pending_attempt_the_ledger_cannot_record_ends_in_a_ledger_error(
        slow: tuple[Any, Any], sessions: Any, pend_fails: str) -> None:
    gateway, _server = slow
    rid = f"{pend_fails}{uuid.uuid4().hex}"
    handle = gateway.submit({"request_id": rid, "team": "t", "feature": "pend", "lane": "async",
                             "model": "gpt-4o-mini", "max_tokens": 20, "tags": {"batch": "true"},
                             "cache": {"mode": "bypass"},
                             "messages": [{"role": "user", "content": "hello there"}]})
    with pytest.raises(LedgerError, match="charged at its worst case"):
        handle.result(timeout=30)
    with sessions() as s:
        row = ledger.get(s, rid)
        tried = attempt_rows.of_request(s, rid)
    assert row is not None and (row.outcome, row.error_code) == ("error", "ledger_error")
    # The batch runs on and the provider bills it: its attempt is charged at its worst case.
    assert [(a.outcome, a.billing, a.cost) for a in tried] == [
        ("lost", "estimated", tried[0].worst_case)]
    assert row.cost == tried[0].worst_case > 0 and row.estimated_cost == row.cost
