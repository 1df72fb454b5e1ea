"""A worker killed while an embedding pack waits in a provider batch: the batch is paid once.

The pack's leader records each member's intent before it submits the batch and its place when
the provider accepts it (workers/embeddings/placements.py); the redelivered members collect
their vectors from that batch instead of packing their items into a second one, and their
attempts are taken up, not charged as lost: each caller is billed its own items once, at the
batch price. Killed between the submit and the record (the provider has the batch, the worker
never heard its id), they find it by the pack's tag in the provider's batch list.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db import attempts as attempt_rows
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.settings import load_settings
from models.domain.tokens import count_text
from models.domain.usage import Usage
from queues.producer import connect
from tests.chaos.support import kill9, ledger_counts, replacement_worker, start_worker, stop
from tests.services import run_token
from workers.providers.standin.batch_api import LIST_PATH
from workers.providers.standin.embeddings_api import tokens_of, vector_for

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
MEMBERS = 4
BATCH_DELAY_S = 6.0  # long enough to kill the worker while the batch runs
SMALL = load_catalogue().get("text-embedding-3-small")
GEMINI = load_catalogue().get("gemini-embedding-001")
#: Per provider: the model, the batch create path, the direct path (never used), the batch
#: list path (the tag lookup), the native size, the count each caller is billed by, and how.
PROVIDERS = {
    "openai": (SMALL, "/v1/batches", "/v1/embeddings", LIST_PATH, 1536, tokens_of, "exact"),
    # Gemini reports no token count: each caller is billed its own, estimated.
    "google": (GEMINI, f"/v1beta/models/{GEMINI.name}:asyncBatchEmbedContent",
               f"/v1beta/models/{GEMINI.name}:batchEmbedContents", "/v1beta/batches", 3072,
               count_text, "estimated"),
}


#: Where the kill lands: while the placed batch runs, or while the provider's answer to the
#: submit is on its way (the batch exists and bills; the worker never hears its id).
RUNNING, SUBMITTING = "while-the-batch-runs", "between-submit-and-record"
CREATE_DELAY_S = 5.0


@pytest.fixture(params=[RUNNING, SUBMITTING])
def slow_batches(request: Any) -> Iterator[Any]:
    """A stand-in of this test's own whose batches take BATCH_DELAY_S to finish (or whose
    submits take CREATE_DELAY_S to answer), and where the kill lands."""
    from workers.providers.standin import StandIn
    from workers.providers.standin.config import StandInConfig

    config = (StandInConfig(batch_delay_s=BATCH_DELAY_S) if request.param == RUNNING
              else StandInConfig(batch_delay_s=1.0, batch_create_delay_s=CREATE_DELAY_S))
    with StandIn(config) as server:
        server.phase = request.param
        yield server


def _path(standin: Any, path: str) -> int:
    return int(standin.stats()["by_path"].get(path, 0))


def _placements(env: dict[str, str]) -> list[dict[str, Any]]:
    """Every member's recorded place (an intent has no batch id yet)."""
    import json

    import redis

    client = redis.Redis.from_url(env["SLUICE_BROKER__URL"])
    try:
        pattern = env["SLUICE_BROKER__KEY_PREFIX"] + "sluice:embed-placement:*"
        return [json.loads(client.get(k) or "{}") for k in client.scan_iter(match=pattern)]
    finally:
        client.close()


def _placed(env: dict[str, str]) -> int:
    return sum(1 for p in _placements(env) if p.get("batch_id"))


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_kill_during_an_embedding_batch_pays_for_it_once(
        chaos_env: dict[str, str], chaos_sessions: Any, slow_batches: Any,
        tmp_path: Path, provider: str) -> None:
    model, create, direct, listing, size, count, billing = PROVIDERS[provider]
    env = {**chaos_env,
           "SLUICE_BROKER__KEY_PREFIX": f"sgebkill{run_token()}:",
           "SLUICE_PROVIDERS__OPENAI_BASE_URL": slow_batches.openai_base_url,
           "SLUICE_PROVIDERS__GOOGLE_BASE_URL": slow_batches.gemini_base_url,
           "SLUICE_BATCH__POLL_INTERVAL_S": "0.2", "SLUICE_BATCH__MAX_WAIT_S": "40",
           "SLUICE_LANES__ASYNC__SOFT_TIME_LIMIT_S": "60",
           "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "500",
           "SLUICE_BROKER__HEARTBEAT_S": "0.5"}
    prefix = f"ebkill-{uuid.uuid4().hex[:8]}-"
    tag = uuid.uuid4().hex[:6]
    reqs = [{"request_id": f"{prefix}{i}", "team": "embedkill", "feature": "archive",
             "lane": "async", "model": model.name, "batch": True, "cache": {"mode": "bypass"},
             "input": [f"archived page {i}.{j} ({tag})" for j in range(1 + i % 2)]}
            for i in range(MEMBERS)]
    log = tmp_path / "worker.log"
    first = start_worker(env, log, queues="async.api", concurrency=MEMBERS * 2)
    gateway = connect(load_settings(dict(env)))
    try:
        handles = [gateway.submit_embedding(r) for r in reqs]
        deadline = time.time() + 60
        while _path(slow_batches, create) < 1:
            assert time.time() < deadline, "the first worker never submitted its batch"
            time.sleep(0.05)
        if slow_batches.phase == RUNNING:
            # The provider has the pack; give the worker a moment to note where it went.
            settle = time.time() + 2
            while _placed(env) < MEMBERS and time.time() < settle:
                time.sleep(0.05)
        else:
            time.sleep(1.0)  # the batch exists; its id is CREATE_DELAY_S from the worker
        kill9(first)  # the batch is at the provider, paid for, its vectors not collected
        assert ledger_counts(chaos_sessions, prefix) == {"running": MEMBERS}
        if slow_batches.phase == SUBMITTING:
            # No member knows the batch's id (there are intents only, tagged with its pack).
            assert not _placed(env), "the kill missed the window between submit and record"
        with replacement_worker(env, log, gateway, chaos_sessions, older_than_s=10,
                                queues="async.api", concurrency=MEMBERS * 2):
            results = [h.result(timeout=90) for h in handles]
    finally:
        gateway.close()
        stop(first)
    assert _path(slow_batches, create) == 1, \
        "the redelivered members went into a second provider batch (paid twice)"
    assert _path(slow_batches, direct) == 0  # nothing sent directly either
    if slow_batches.phase == SUBMITTING:  # found by its tag in the provider's batch list
        assert _path(slow_batches, listing) >= 1
    with chaos_sessions() as s:
        rows = {r.request_id: r for r in s.scalars(
            select(LedgerRow).where(LedgerRow.request_id.startswith(prefix))).all()}
        tried = {rid: attempt_rows.of_request(s, rid) for rid in rows}
    assert len(rows) == MEMBERS
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(model.name, t, size) for t in req["input"]]
        own = sum(count(t) for t in req["input"])
        row = rows[req["request_id"]]
        want = cost_of(Usage(input_uncached=own), model, batch=True)
        guessed = want if billing == "estimated" else 0
        assert (row.outcome, row.batch, row.cost, row.estimated_cost) == ("ok", True, want,
                                                                          guessed)
        assert res.cost == want
        # One attempt, taken up by the redelivered run: not charged as lost on top.
        assert [(a.outcome, a.billing, a.cost) for a in tried[req["request_id"]]] == \
            [("ok", billing, want)]
