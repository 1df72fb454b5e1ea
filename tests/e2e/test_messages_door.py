"""``POST /v1/messages`` through the official anthropic SDK: the wire format, tools and tool
loops (on Claude and translated to OpenAI models), count_tokens, jobs, and the error types."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.frontdoor_support import mint, row
from tests.e2e.messages_support import CLAUDE, said, tools

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def claude(door: str, team_key: str) -> Any:
    """The anthropic SDK pointed at the door (it sends the key as ``Authorization: Bearer``)."""
    with anthropic.Anthropic(api_key=team_key, base_url=door, max_retries=0, timeout=30) as c:
        yield c


def test_a_plain_message_is_answered_billed_and_attributed(claude: anthropic.Anthropic,
                                                           sessions: Any) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=32, messages=[{"role": "user", "content": said("Title: mug")}],
        metadata={"user_id": "u-42"}, extra_headers={"x-sluice-feature": "agent-plain"})
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == CLAUDE
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert (r.team, r.feature, r.user, r.model, r.outcome) == ("catalog", "agent-plain", "u-42",
                                                                CLAUDE, "ok")
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (r.input_uncached, r.output)
    assert Decimal(raw.headers["x-sluice-cost"]) == r.cost > 0


def test_the_key_is_accepted_as_x_api_key_and_a_wrong_one_is_an_authentication_error(
        door: str, team_key: str) -> None:
    # Agents send either header: with no api_key the SDK sends only the x-api-key given here.
    with anthropic.Anthropic(api_key=None, base_url=door, max_retries=0,
                             default_headers={"x-api-key": team_key}) as sdk:
        msg = sdk.messages.create(model=CLAUDE, max_tokens=8,
                                  messages=[{"role": "user", "content": said("Hi")}])
        assert msg.content[0].text
    for headers in ({"x-api-key": "sk-wrong"}, {"authorization": "Bearer sk-wrong"}, {}):
        r = httpx.post(door + "/v1/messages", headers={"anthropic-version": "2023-06-01",
                                                       **headers},
                       json={"model": CLAUDE, "max_tokens": 8,
                             "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "authentication_error"
    with anthropic.Anthropic(api_key="sk-wrong", base_url=door, max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.create(model=CLAUDE, max_tokens=8,
                                messages=[{"role": "user", "content": "hi"}])


def test_async_sdk_and_system_blocks(door: str, team_key: str, sessions: Any) -> None:
    async def run() -> tuple[str, Any]:
        async with anthropic.AsyncAnthropic(api_key=team_key, base_url=door,
                                            max_retries=0) as ac:
            raw = await ac.messages.with_raw_response.create(
                model=CLAUDE, max_tokens=16,
                system=[{"type": "text", "text": "You write product titles."},
                        {"type": "text", "text": "Keep them under ten words."}],
                messages=[{"role": "user",
                           "content": [{"type": "text", "text": said("Title: vase")}]}])
            return raw.headers["x-sluice-request-id"], await raw.parse()

    rid, msg = asyncio.run(run())
    assert msg.content[0].text
    r = row(sessions, rid)
    assert r.outcome == "ok" and r.input_uncached == msg.usage.input_tokens


@pytest.mark.parametrize("model", [CLAUDE, "cheap"])
def test_a_tool_loop_runs_to_completion_with_twenty_tools(claude: anthropic.Anthropic,
                                                          sessions: Any, model: str) -> None:
    # "cheap" routes to an OpenAI model: the door's Anthropic blocks are translated there and
    # the OpenAI tool call comes back as a tool_use block.
    defs = tools(20)
    history: list[dict[str, Any]] = [{"role": "user",
                                      "content": said("Price? use tool tool_7")}]
    first = claude.messages.create(model=model, max_tokens=64, tools=defs,
                                   tool_choice={"type": "auto"}, messages=history)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "tool_7" and isinstance(call.input, dict)
    history += [{"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                  for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                              "content": "12.50 EUR"}]}]
    final = claude.messages.with_raw_response.create(model=model, max_tokens=32, tools=defs,
                                                     messages=history)
    done = final.parse()
    assert done.stop_reason in ("end_turn", "max_tokens") and done.content[0].type == "text"
    r = row(sessions, final.headers["x-sluice-request-id"])
    assert r.outcome == "ok" and (r.provider == "anthropic") == (model == CLAUDE)
    assert r.output == done.usage.output_tokens


def test_cache_control_is_kept_and_the_prefix_is_read_back(claude: anthropic.Anthropic,
                                                           sessions: Any) -> None:
    system = [{"type": "text", "text": said("House style. ") + "Be concise. " * 3000,
               "cache_control": {"type": "ephemeral"}}]
    ids = []
    for turn in ("Title: kettle", "Title: teapot"):
        raw = claude.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=16, system=system,
            messages=[{"role": "user", "content": said(turn)}])
        ids.append((raw.headers["x-sluice-request-id"], raw.parse().usage))
    (first_id, first), (second_id, second) = ids
    assert first.cache_creation_input_tokens > 8000 and first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    r = row(sessions, second_id)
    assert (r.cache_read, r.input_uncached) == (second.cache_read_input_tokens,
                                                second.input_tokens)


def test_anthropic_beta_and_version_are_forwarded(claude: anthropic.Anthropic,
                                                  standin: Any) -> None:
    flag = f"test-flag-{time.monotonic_ns()}"
    claude.messages.create(model=CLAUDE, max_tokens=8,
                           messages=[{"role": "user", "content": said("Hi")}],
                           extra_headers={"anthropic-beta": flag})
    assert standin.stats()["anthropic_beta"].get(flag) == 1


def test_count_tokens_is_the_count_the_request_is_billed_by(
        claude: anthropic.Anthropic, standin: Any, sessions: Any) -> None:
    body: dict[str, Any] = {
        "model": CLAUDE, "system": "You price things.", "tools": tools(3),
        "messages": [{"role": "user", "content": said("What does tool_1 say about 42?")}]}
    raw = claude.messages.with_raw_response.count_tokens(**body)
    counted = raw.parse().input_tokens
    # Asked of the provider (the stand-in serving Anthropic's API), not estimated.
    assert raw.headers["x-sluice-count"] == "provider"
    with httpx.Client(base_url=standin.anthropic_base_url) as http:
        direct = http.post("/v1/messages/count_tokens", json=body,
                           headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert direct.status_code == 200 and direct.json()["input_tokens"] == counted
    made = claude.messages.with_raw_response.create(
        max_tokens=8, extra_headers={"x-sluice-cache-mode": "bypass"}, **body)
    u = made.parse().usage
    billed = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    assert billed == counted  # exact: the count the request is billed by
    r = row(sessions, made.headers["x-sluice-request-id"])
    assert r.input_uncached + r.cache_read + r.cache_write_5m + r.cache_write_1h == counted
    with pytest.raises(anthropic.NotFoundError) as exc:
        claude.messages.count_tokens(model="claude-nope", messages=body["messages"])
    assert exc.value.body["error"]["type"] == "not_found_error"


def test_count_tokens_of_another_model_is_its_tokenizer_count(
        claude: anthropic.Anthropic) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "system": "You price things.",
                            "messages": [{"role": "user", "content": said("Price of 42?")}]}
    raw = claude.messages.with_raw_response.count_tokens(**body)
    assert raw.headers["x-sluice-count"] == "tokenizer"
    made = claude.messages.create(max_tokens=8, **body)
    # o200k is gpt-4o-mini's own tokenizer: the count is what OpenAI bills.
    assert raw.parse().input_tokens == made.usage.input_tokens + \
        made.usage.cache_read_input_tokens


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"extra_body": {"temperature": 1.5}}, "temperature"),
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking"),
    ({"model": "gpt-4o-mini", "extra_body": {"top_k": 5}}, "top_k"),  # OpenAI has none
    ({"tool_choice": {"type": "any"}}, "tool_choice"),  # no tools to call
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"}}]}]},
     "messages"),
    ({"messages": [{"role": "assistant", "content": "prefill"}]}, "messages"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
])
def test_invalid_requests_are_400s_naming_the_field(claude: anthropic.Anthropic,
                                                    kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"model": CLAUDE, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(**args)
    error = exc.value.body["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field, error


def test_unknown_model_is_a_not_found_error(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        claude.messages.create(model="claude-nope", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["error"]["type"] == "not_found_error"


def test_a_budget_refusal_is_a_rate_limit_error_naming_the_budget(
        door: str, pg_url: str, sessions: Any, standin: Any) -> None:
    from models.db.budgets import set_budget
    from scheduler.admission import AdmissionConfig

    with sessions() as s:
        set_budget(s, "team", "frugal-agent", "total", hard=Decimal("0.000001"))
        s.commit()
    time.sleep(AdmissionConfig().budget_cache_ttl_s + 0.2)  # the door's budget cache
    before = standin.stats()["requests"]
    with anthropic.Anthropic(api_key=mint(pg_url, "frugal-agent"), base_url=door,
                             max_retries=2) as sdk:
        with pytest.raises(anthropic.RateLimitError) as exc:
            sdk.messages.create(model=CLAUDE, max_tokens=2000,
                                messages=[{"role": "user", "content": said("Essay")}])
    error = exc.value.body["error"]
    assert error["type"] == "rate_limit_error" and error["budget"]["budget"] == \
        "team:frugal-agent:total"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert standin.stats()["requests"] == before


def test_the_async_lane_answers_with_a_job_polled_in_anthropic_shape(
        door: str, team_key: str, sessions: Any) -> None:
    headers = {"authorization": f"Bearer {team_key}", "x-sluice-lane": "async",
               "anthropic-version": "2023-06-01"}
    r = httpx.post(door + "/v1/messages", headers=headers, timeout=30,
                   json={"model": CLAUDE, "max_tokens": 8,
                         "messages": [{"role": "user", "content": said("Later: title")}]})
    assert r.status_code == 202
    job = r.json()["id"]
    deadline = time.monotonic() + 30
    while (polled := httpx.get(door + f"/v1/jobs/{job}", headers=headers).json())["status"] \
            != "completed":
        assert time.monotonic() < deadline, polled
        time.sleep(0.1)
    assert polled["result"]["type"] == "message" and polled["result"]["content"][0]["text"]
    assert row(sessions, job).lane == "async"


def test_a_keys_feature_bills_without_a_header_and_a_feature_it_may_not_bill_is_403(
        door: str, pg_url: str, sessions: Any) -> None:
    key = mint(pg_url, "agents", feature="coding-agent", allow_features=["review"])
    with anthropic.Anthropic(api_key=key, base_url=door, max_retries=0) as sdk:
        plain = sdk.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": said("Hi")}])
        named = sdk.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": said("Hi")}],
            extra_headers={"x-sluice-feature": "review"})  # the header still wins
        with pytest.raises(anthropic.PermissionDeniedError) as exc:
            sdk.messages.create(model=CLAUDE, max_tokens=8,
                                messages=[{"role": "user", "content": said("Hi")}],
                                extra_headers={"x-sluice-feature": "checkout"})
    assert row(sessions, plain.headers["x-sluice-request-id"]).feature == "coding-agent"
    assert row(sessions, named.headers["x-sluice-request-id"]).feature == "review"
    error = exc.value.body["error"]
    assert error["type"] == "permission_error" and error["param"] == "x-sluice-feature"
