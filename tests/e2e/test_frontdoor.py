"""The OpenAI-compatible front door, driven by the official openai SDK (sync and async).

uvicorn serves the app on a loopback port; behind it run the session's real Celery worker,
Redis, PostgreSQL ledger and the provider stand-in (fixtures in tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import openai
import pytest

from models.db.tables import LedgerRow
from tests.e2e.frontdoor_support import SYSTEM, mint, row, user

pytestmark = pytest.mark.integration


def test_sync_completion_is_attributed_from_key_and_headers(client: openai.OpenAI,
                                                            sessions: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="cheap", max_tokens=24,
        messages=[{"role": "system", "content": SYSTEM}, user("Rephrase: blue ceramic mug")],
        extra_headers={"x-sluice-feature": "title-rephrase", "x-sluice-user": "u-42"})
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content and completion.choices[0].finish_reason
    rid = raw.headers["x-sluice-request-id"]
    r = row(sessions, rid)
    assert (r.team, r.feature, r.user, r.lane, r.tier, r.model, r.outcome) == (
        "catalog", "title-rephrase", "u-42", "interactive", "cheap", "gpt-4o-mini", "ok")
    assert Decimal(raw.headers["x-sluice-cost"]) == r.cost > 0
    assert Decimal(raw.headers["x-sluice-baseline-cost"]) == r.baseline_cost > r.cost
    assert raw.headers["x-sluice-route"] == "tier=cheap; model=gpt-4o-mini; queue=interactive.api"
    assert raw.headers["x-sluice-cache"] == "miss"
    timing = dict(part.split(";dur=") for part in raw.headers["server-timing"].split(", "))
    assert float(timing["provider"]) > 0 and float(timing["total"]) >= float(timing["queue"])
    u = completion.usage
    assert u is not None and u.prompt_tokens == r.input_uncached + r.cache_read > 0
    assert u.completion_tokens == r.output and u.total_tokens == u.prompt_tokens + r.output
    assert r.input_uncached > len(SYSTEM.split())  # the system prompt was sent and billed


def test_cached_prompt_tokens_are_counted_in_prompt_tokens(client: openai.OpenAI,
                                                           sessions: Any) -> None:
    system = "Store style guide. " + " ".join(f"Rule {i}: keep titles plain." for i in range(300))
    first = client.chat.completions.create(model="gpt-4o-mini", max_tokens=16, messages=[
        {"role": "system", "content": system}, user("Rephrase: oak table")])
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=16,
        messages=[{"role": "system", "content": system}, user("Rephrase: pine chair")])
    second = raw.parse()
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens and details.cached_tokens >= 1024
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert r.cache_read == details.cached_tokens
    assert second.usage.prompt_tokens == r.input_uncached + r.cache_read  # includes cached


def test_a_repeat_is_answered_by_the_response_cache(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": SYSTEM}, user("Classify: lamp")]
    first = client.chat.completions.with_raw_response.create(model="cheap", messages=messages,
                                                             max_tokens=8)
    again = client.chat.completions.with_raw_response.create(model="cheap", messages=messages,
                                                             max_tokens=8)
    assert first.headers["x-sluice-cache"] == "miss" and again.headers["x-sluice-cache"] == "hit"
    assert Decimal(again.headers["x-sluice-cost"]) == 0
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_async_sdk_runs_concurrent_requests(door: str, team_key: str, sessions: Any) -> None:
    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(api_key=team_key, base_url=door + "/v1",
                                      max_retries=0, timeout=30) as ac:
            calls = [ac.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", max_tokens=12, messages=[user(f"Rephrase: item {i}")],
                extra_headers={"x-sluice-feature": "bulk-async-sdk"}) for i in range(8)]
            return list(await asyncio.gather(*calls))

    raws = asyncio.run(run())
    ids = {r.headers["x-sluice-request-id"] for r in raws}
    assert len(ids) == 8
    for raw in raws:
        assert raw.parse().choices[0].message.content
        assert row(sessions, raw.headers["x-sluice-request-id"]).feature == "bulk-async-sdk"


def test_no_key_and_a_wrong_key_get_401(door: str, client: openai.OpenAI) -> None:
    bare = httpx.post(f"{door}/v1/chat/completions", json={"model": "cheap", "messages": []})
    assert bare.status_code == 401
    assert bare.json()["error"]["message"].startswith("You didn't provide an API key")
    wrong = openai.OpenAI(api_key="sk-sluice-000000000000-not-a-key", base_url=door + "/v1",
                          max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        wrong.chat.completions.create(model="cheap", messages=[user("hi")])
    assert exc.value.code == "invalid_api_key"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages"),
    ({"extra_body": {"frobnicate": True}}, "frobnicate"),
    ({"extra_headers": {"x-sluice-lane": "urgent"}}, "x-sluice-lane"),
    ({"extra_headers": {"x-sluice-feature": "has spaces"}}, "x-sluice-feature"),
    ({"stream": False, "n": 3}, "n"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
    ({"stream": True, "extra_headers": {"x-sluice-lane": "async"}}, "stream"),
])
def test_validation_errors_are_400_naming_the_param(client: openai.OpenAI, kwargs: Any,
                                                    param: str) -> None:
    call: dict[str, Any] = {"model": "cheap", "messages": [user("hello")], **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**call)
    assert exc.value.status_code == 400 and exc.value.param == param
    assert exc.value.type == "invalid_request_error"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-17", messages=[user("hello")])
    assert exc.value.code == "unknown_model" and exc.value.param == "model"
    assert "gpt-4o-mini" in exc.value.message  # says what would work


def test_budget_refusal_is_429_naming_the_budget_and_not_retried(
        door: str, pg_url: str, sessions: Any, standin: Any) -> None:
    admission = pytest.importorskip("scheduler.admission")
    from models.db.budgets import set_budget

    with sessions() as s:
        set_budget(s, "team", "frugal", "total", hard=Decimal("0.000001"))
        s.commit()
    # The front door's admission caches which budgets exist for this long.
    time.sleep(admission.AdmissionConfig().budget_cache_ttl_s + 0.2)
    sent: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: sent.append(str(r.url))]})
    sdk = openai.OpenAI(api_key=mint(pg_url, "frugal"), base_url=door + "/v1", http_client=http)
    before = standin.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as exc:  # the SDK would retry a 429 twice ...
        sdk.chat.completions.create(model="flagship", max_tokens=2000, messages=[user("Essay")])
    assert len(sent) == 1  # ... but x-should-retry: false tells it not to
    body = exc.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    assert body["budget"]["budget"] == "team:frugal:total"
    assert "team:frugal:total" in body["message"]
    assert standin.stats()["requests"] == before  # nothing was dispatched


def test_the_same_request_id_is_billed_once(client: openai.OpenAI, sessions: Any) -> None:
    rid = f"e2e-{uuid.uuid4().hex}"
    headers = {"x-sluice-request-id": rid, "x-sluice-cache-mode": "bypass"}
    first = client.chat.completions.create(model="cheap", messages=[user("Rephrase: cup")],
                                           extra_headers=headers)
    again = client.chat.completions.create(model="cheap", messages=[user("Rephrase: cup")],
                                           extra_headers=headers)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert first.id == again.id == f"chatcmpl-{rid}"
    with sessions() as s:
        assert s.query(LedgerRow).filter(LedgerRow.request_id == rid).count() == 1


def test_operator_endpoints_need_an_operator_key(door: str, pg_url: str,
                                                 team_key: str) -> None:
    op = {"authorization": f"Bearer {mint(pg_url, 'platform', role='operator')}"}
    refused = httpx.post(f"{door}/admin/keys", json={"team": "x"},
                         headers={"authorization": f"Bearer {team_key}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "operator_key_required"
    assert httpx.get(f"{door}/admin/health").status_code == 401
    health = httpx.get(f"{door}/admin/health", headers=op)
    body = health.json()
    assert health.status_code == 200 and body.pop("shedding")["limit"] >= 1
    assert body == {"status": "ok", "database": "ok", "broker": "ok"}
    minted = httpx.post(f"{door}/admin/keys", json={"team": "newteam"}, headers=op)
    assert minted.status_code == 201 and minted.json()["key"].startswith("sk-sluice-")
    new = {"authorization": f"Bearer {minted.json()['key']}"}
    assert httpx.get(f"{door}/v1/models", headers=new).status_code == 200
    listed = httpx.get(f"{door}/admin/keys", params={"team": "newteam"}, headers=op).json()
    assert [k["id"] for k in listed["data"]] == [minted.json()["id"]]
    assert "key" not in listed["data"][0] and "digest" not in listed["data"][0]
    gone = httpx.delete(f"{door}/admin/keys/{minted.json()['id']}", headers=op)
    assert gone.status_code == 200
    assert httpx.get(f"{door}/v1/models", headers=new).status_code == 401


def test_operator_endpoints_refuse_nul_and_control_characters(door: str, pg_url: str) -> None:
    """Found by the fuzzer: a NUL in ?team= reached PostgreSQL (which cannot store it): a 500."""
    op = {"authorization": f"Bearer {mint(pg_url, 'platform', role='operator')}"}
    listed = httpx.get(f"{door}/admin/keys", params={"team": "\x00"}, headers=op)
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "team"
    named = httpx.post(f"{door}/admin/keys", json={"team": "t", "name": "a\x00b"}, headers=op)
    assert named.status_code == 400 and named.json()["error"]["param"] == "name"
    gone = httpx.delete(f"{door}/admin/keys/%00", headers=op)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "key_not_found"


def test_models_and_schema_are_served(client: openai.OpenAI, door: str) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"auto", "cheap", "flagship", "self-hosted", "gpt-4o-mini"} <= ids
    schema = httpx.get(f"{door}/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and schema["openapi"].startswith("3.")
