"""The async lane on provider Batch APIs: gathered, submitted, polled, billed at 50 % in the ledger.

A worker process of its own (its own broker key prefix, so the session worker never takes these
tasks) runs with a short batch window and a fast poll; the stand-in implements both the OpenAI
Batch API (JSONL file) and Anthropic Message Batches.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.db import ledger
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.errors import ProviderPermanent
from models.domain.settings import load_settings
from tests.services import run_token

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CAT = load_catalogue()
BATCH_MAX = 4
BATCH_TIMEOUT_MS = 400


@pytest.fixture(scope="module")
def batch_env(integration_env: dict[str, str]) -> dict[str, str]:
    return {**integration_env,
            "SLUICE_BROKER__KEY_PREFIX": f"sgbatch{run_token()}:",
            "SLUICE_BATCH__POLL_INTERVAL_S": "0.05",
            "SLUICE_LANES__ASYNC__BATCH_MAX": str(BATCH_MAX),
            "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": str(BATCH_TIMEOUT_MS)}


@pytest.fixture(scope="module")
def batch_worker(batch_env: dict[str, str], tmp_path_factory: Any
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker on async.api with enough threads for a full batch to wait at once."""
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("batch-worker") / "worker.log"
    with celery_worker(batch_env, log, queues="async.api", concurrency=BATCH_MAX * 3,
                       name=f"batch-{run_token()}") as proc:
        yield proc


@pytest.fixture(scope="module")
def batch_gateway(batch_env: dict[str, str], batch_worker: Any) -> Iterator[Any]:
    from queues.producer import connect

    gw = connect(load_settings(batch_env))
    yield gw
    gw.close()



def req(model: str, *, batch: str | None = "true", text: str = "Rephrase: linen towel",
        **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": f"b-{uuid.uuid4().hex}", "team": "catalog", "feature": "nightly-seo",
        "lane": "async", "model": model, "max_tokens": 30, "cache": {"mode": "bypass"},
        "messages": [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:6]}"}], **kw}
    if batch is not None:
        data["tags"] = {"batch": batch}
    return data


def counts(standin: Any) -> dict[str, int]:
    by_path = standin.stats()["by_path"]
    return {"openai_batches": by_path.get("/v1/batches", 0),
            "uploads": by_path.get("/v1/files", 0),
            "anthropic_batches": by_path.get("/v1/messages/batches", 0),
            "chat": by_path.get("/v1/chat/completions", 0),
            "messages": by_path.get("/v1/messages", 0)}


def assert_billed_at_half(sessions: Any, result: Any) -> None:
    model = CAT.get(result.model)
    assert result.cost == cost_of(result.usage, model, batch=True)
    assert result.cost == cost_of(result.usage, model) / 2 > 0
    with sessions() as s:
        row = ledger.get(s, result.request_id)
    assert row is not None and row.outcome == "ok" and row.batch is True
    assert row.cost == result.cost and isinstance(row.cost, Decimal)
    assert row.list_cost == 2 * row.cost  # no prompt caching here: list price is twice the bill


@pytest.mark.parametrize(("model", "kind"), [("gpt-4o-mini", "openai_batches"),
                                             ("claude-haiku-4-5", "anthropic_batches")])
def test_a_full_batch_goes_out_as_one_provider_batch_at_half_price(
        batch_gateway: Any, sessions: Any, standin: Any, model: str, kind: str) -> None:
    before = counts(standin)
    handles = [batch_gateway.submit(req(model)) for _ in range(BATCH_MAX)]
    results = [h.result(timeout=60) for h in handles]
    after = counts(standin)
    assert after[kind] - before[kind] == 1, "the four requests should share one batch"
    assert after["chat"] == before["chat"] and after["messages"] == before["messages"]
    if kind == "openai_batches":
        assert after["uploads"] - before["uploads"] == 1  # one JSONL file
    for result in results:
        assert result.text and result.model == model and result.route.lane == "async"
        assert_billed_at_half(sessions, result)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_tool_calls_come_back_through_a_provider_batch(batch_gateway: Any, sessions: Any,
                                                       model: str) -> None:
    tools = [{"name": "find_sku", "description": "Look a product up by its SKU."}]
    handles = [batch_gateway.submit(req(model, text="Please use tool find_sku for SKU",
                                        static={"tools": tools}))
               for _ in range(BATCH_MAX)]
    for result in (h.result(timeout=60) for h in handles):
        assert result.finish_reason == "tool_calls" and result.text == ""
        assert [c.name for c in result.tool_calls] == ["find_sku"]
        assert "SKU" in json.loads(result.tool_calls[0].arguments)["request"]
        assert_billed_at_half(sessions, result)


def test_a_partial_batch_leaves_when_the_window_closes(batch_gateway: Any, sessions: Any,
                                                       standin: Any) -> None:
    before = counts(standin)
    started = time.monotonic()
    handles = [batch_gateway.submit(req("gpt-4o-mini")) for _ in range(2)]
    results = [h.result(timeout=60) for h in handles]
    assert time.monotonic() - started >= BATCH_TIMEOUT_MS / 1000  # it waited for company
    assert counts(standin)["openai_batches"] - before["openai_batches"] == 1
    for result in results:
        assert_billed_at_half(sessions, result)


def test_async_requests_not_opted_in_are_called_directly(batch_gateway: Any, sessions: Any,
                                                         standin: Any) -> None:
    before = counts(standin)
    result = batch_gateway.complete(req("gpt-4o-mini", batch=None), timeout=60)
    after = counts(standin)
    assert after["chat"] - before["chat"] == 1
    assert after["openai_batches"] == before["openai_batches"]
    assert result.cost == cost_of(result.usage, CAT.get("gpt-4o-mini"))
    with sessions() as s:
        row = ledger.get(s, result.request_id)
    assert row is not None and row.batch is False


def test_a_refused_request_fails_alone_and_a_failed_one_is_answered_directly(
        batch_gateway: Any, sessions: Any, standin: Any) -> None:
    standin.script_faults(["400", "500"], model="claude-haiku-4-5", path="anthropic")
    before = counts(standin)
    handles = [batch_gateway.submit(req("claude-haiku-4-5")) for _ in range(BATCH_MAX)]
    outcomes: list[Any] = []
    for h in handles:
        try:
            outcomes.append(h.result(timeout=60))
        except ProviderPermanent as err:
            outcomes.append(err)
    refused = [o for o in outcomes if isinstance(o, ProviderPermanent)]
    assert len(refused) == 1 and "invalid_request_error" in refused[0].message
    answered = [o for o in outcomes if not isinstance(o, ProviderPermanent)]
    assert len(answered) == 3
    # The 500 inside the batch is retryable: that request is answered directly, at full price.
    assert counts(standin)["messages"] - before["messages"] == 1
    direct = [r for r in answered if r.cost == cost_of(r.usage, CAT.get(r.model))]
    assert len(direct) == 1
    for result in answered:
        if result is not direct[0]:
            assert_billed_at_half(sessions, result)
    with sessions() as s:
        failed = ledger.get(s, handles[outcomes.index(refused[0])].request_id)
        assert failed is not None and failed.outcome == "error" and failed.cost == 0
        plain = ledger.get(s, direct[0].request_id)
        assert plain is not None and plain.batch is False


def test_batch_placements_live_in_redis_with_a_ttl(redis_db_url: str) -> None:
    import redis

    from workers.batch.placements import PLACEMENT_TTL_S, Placement, placements_for

    prefix = f"sgplace{run_token()}:"
    store = placements_for(redis_db_url, prefix)
    key = f"task-{uuid.uuid4().hex}"
    assert store.get(key) is None
    store.put({key: Placement("anthropic", "claude-haiku-4-5", "msgbatch_1", "r3")})
    assert store.get(key) == Placement("anthropic", "claude-haiku-4-5", "msgbatch_1", "r3")
    client = redis.Redis.from_url(redis_db_url)
    ttl = client.ttl(f"{prefix}sluice:batch-placement:{key}")
    client.delete(f"{prefix}sluice:batch-placement:{key}")
    assert 0 < ttl <= PLACEMENT_TTL_S


def test_responses_door_requests_go_out_on_the_responses_batch_endpoint(
        batch_gateway: Any, sessions: Any, standin: Any) -> None:
    # A Responses-door request (openai_responses set) to a reasoning model, in a batch: the
    # batch targets /v1/responses, so its reasoning items come back, at half price.
    before = standin.stats()["by_path"].get("/v1/batches", 0)
    handles = [batch_gateway.submit(req("gpt-5-mini", openai_responses={}, max_tokens=400)) for _ in
               range(BATCH_MAX)]
    results = [h.result(timeout=60) for h in handles]
    assert standin.stats()["by_path"].get("/v1/batches", 0) - before == 1
    for result in results:
        assert result.text and result.usage.reasoning > 0
        assert result.reasoning and result.reasoning[0]["encrypted_content"]
        assert_billed_at_half(sessions, result)


#: Item 1's parameters an OpenAI model takes, as the batch body must carry them.
OPENAI_PARAMS: dict[str, Any] = {
    "top_p": 0.5, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25,
    "logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 2,
    "metadata": {"run": "nightly"}, "store": False, "safety_identifier": "h-9",
    "prompt_cache_key": "pk-batch", "service_tier": "auto", "user": "u-9",
    "response_format": "json_schema",
    "response_schema": {"name": "title", "schema": {"type": "object", "properties": {
        "title": {"type": "string"}}, "required": ["title"]}, "strict": True}}


def test_every_parameter_goes_through_an_openai_batch_and_comes_back(
        batch_gateway: Any, sessions: Any, standin: Any) -> None:
    marker = uuid.uuid4().hex
    handles = [batch_gateway.submit(req("gpt-4o-mini", text=f"Title {marker}", **OPENAI_PARAMS))
               for _ in range(BATCH_MAX)]
    results = [h.result(timeout=60) for h in handles]
    sent = [r["body"] for r in standin.received(contains=marker)]
    assert len(sent) == BATCH_MAX
    for body in sent:  # the JSONL lines carry the chat body the single call sends
        assert {k: body[k] for k in ("top_p", "seed", "presence_penalty", "frequency_penalty",
                                     "logit_bias", "logprobs", "top_logprobs", "metadata",
                                     "store", "safety_identifier", "prompt_cache_key",
                                     "service_tier", "user")} == {
            k: v for k, v in OPENAI_PARAMS.items()
            if k not in ("response_format", "response_schema")}
        assert body["response_format"]["json_schema"]["strict"] is True
    for result in results:
        # Logprobs come back through the batch as from a single call: one per token.
        assert result.logprobs and "".join(t["token"] for t in result.logprobs) == result.text
        assert all(len(t["top_logprobs"]) == 2 for t in result.logprobs)
        assert "title" in json.loads(result.text)
        assert_billed_at_half(sessions, result)


def test_thinking_and_stop_sequences_come_back_through_an_anthropic_batch(
        batch_gateway: Any, sessions: Any, standin: Any) -> None:
    marker = uuid.uuid4().hex
    handles = [batch_gateway.submit(req("claude-sonnet-4-6", text=f"Think {marker}",
                                        max_tokens=3000, thinking_budget=1500,
                                        temperature=1.0, stop=["zzz-never"]))
               for _ in range(BATCH_MAX)]
    results = [h.result(timeout=60) for h in handles]
    for body in (r["body"] for r in standin.received(contains=marker)):
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1500}
        assert body["stop_sequences"] == ["zzz-never"]
    for result in results:
        (block,) = result.thinking
        assert block.type == "thinking" and block.thinking and block.signature
        assert 0 < result.usage.reasoning < result.usage.output
        assert result.stop_sequence is None and result.finish_reason == "stop"
        assert_billed_at_half(sessions, result)
