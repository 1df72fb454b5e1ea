"""The Responses door's translation: input items to turns, results to response objects and
events, and the OpenAI adapter's Responses body and usage (pure functions, no I/O)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from models.db.api_keys import KeyInfo
from models.domain.catalogue import load_catalogue
from models.domain.errors import ValidationError
from models.domain.request import ToolCall, parse_request
from models.domain.result import ChatResult, Route
from models.domain.usage import Usage, from_openai, from_openai_responses
from queues.envelope import Envelope
from queues.http.wire.openai_responses import OpenAIResponses
from queues.http.wire.openai_responses_render import Events, response_body
from workers.providers.base import ProviderCall
from workers.providers.openai_responses import reply_of, responses_body

KEY = KeyInfo(id="k1", org="acme", team="web", role="team")
WIRE = OpenAIResponses()
THOUGHT = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "sealed"}


def parsed(**body: Any) -> Any:
    return WIRE.parse({"model": "gpt-5-mini", **body}, {}, KEY)


def test_a_string_input_is_one_user_turn_and_instructions_the_system_prompt() -> None:
    p = parsed(input="hi", instructions="Be brief.", max_output_tokens=50)
    assert p.data["messages"] == [{"role": "user", "content": "hi"}]
    assert p.data["static"] == {"system": "Be brief."} and p.data["max_tokens"] == 50
    parse_request(p.data)  # a valid ChatRequest


def test_assistant_side_items_make_one_turn_with_its_reasoning() -> None:
    p = parsed(input=[
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        THOUGHT,
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
        tools=[{"type": "function", "name": "w", "parameters": {"type": "object"}}])
    user, assistant, tool = p.data["messages"]
    assert assistant == {"role": "assistant", "content": "", "reasoning": [THOUGHT],
                         "tool_calls": [{"id": "c1", "name": "w", "arguments": "{}"}]}
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    request = parse_request(p.data)
    assert request.messages[1].reasoning == (THOUGHT,)
    assert request.openai_responses is not None


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
    ({"input": "hi", "include": ["file_search_call.results"]}, "include"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "store": "yes"}, "store"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"input": "hi", "bogus": 1}, "bogus"),
])
def test_what_cannot_be_honoured_is_a_400_naming_its_param(body: dict[str, Any],
                                                           param: str) -> None:
    with pytest.raises(ValidationError) as err:
        parsed(**body)
    assert err.value.field == param


def test_json_schema_format_and_reasoning_become_request_fields() -> None:
    p = parsed(input="hi", reasoning={"effort": "low", "summary": "auto"},
               text={"format": {"type": "json_schema", "name": "r",
                                "schema": {"type": "object"}}},
               include=["reasoning.encrypted_content"])
    r = parse_request(p.data)
    assert (r.reasoning_effort, r.response_format, r.response_schema.name) == (
        "low", "json_schema", "r")
    assert r.openai_responses.include == ("reasoning.encrypted_content",)
    assert r.openai_responses.reasoning_summary == "auto"


def result(**fields: Any) -> ChatResult:
    route = Route(tier="cheap", model="gpt-5-mini", provider="openai", backend="api",
                  lane="interactive")
    return ChatResult(**{"request_id": "r1", "text": "hello", "provider": "openai",
                         "model": "gpt-5-mini", "route": route, "cost": Decimal("0.01"),
                         **fields})


def test_the_response_object_has_openais_usage_and_item_order() -> None:
    usage = Usage(input_uncached=70, cache_read=30, output=20, reasoning=8)
    body = response_body(result(usage=usage, reasoning=(THOUGHT,),
                                tool_calls=(ToolCall(id="c1", name="w", arguments="{}"),),
                                finish_reason="tool_calls"), {})
    assert [o["type"] for o in body["output"]] == ["reasoning", "message", "function_call"]
    assert "encrypted_content" not in body["output"][0]  # not asked for in include
    assert body["usage"]["input_tokens"] == 100  # cached tokens included, as OpenAI's
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 30
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 8
    shown = response_body(result(reasoning=(THOUGHT,)),
                          {"include": ["reasoning.encrypted_content"]})
    assert shown["output"][0]["encrypted_content"] == "sealed"
    assert response_body(result(finish_reason="length"), {})["status"] == "incomplete"


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines()
            if line.startswith("data: ")]


def test_relayed_events_are_numbered_and_end_with_the_calls() -> None:
    enc = Events("r1", "gpt-5-mini", {})
    raw = enc.opening() + enc.text("hel") + enc.text("lo")
    raw += enc.ending(result(tool_calls=(ToolCall(id="c1", name="w", arguments='{"a":1}'),)))
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds.index("response.output_text.done") < kinds.index(
        "response.function_call_arguments.delta") < kinds.index(
        "response.function_call_arguments.done") < kinds.index("response.completed")
    done = events[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    # Cut short by max_output_tokens: the stream ends as OpenAI's does, incomplete.
    cut = _events(Events("r2", "gpt-5-mini", {}).whole(result(finish_reason="length")))
    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def call_for(request: dict[str, Any], model: str = "gpt-5-mini") -> ProviderCall:
    return ProviderCall(request=parse_request({"team": "web", "feature": "f",
                                               "model": model, **request}),
                        model=load_catalogue().get(model))


def test_the_adapter_sends_reasoning_before_its_turn_and_asks_for_it_encrypted() -> None:
    plain = dict(THOUGHT, encrypted_content=None)
    body = responses_body(call_for({
        "static": {"system": "sys", "tools": [{"name": "w"}]},
        "openai_responses": {"reasoning_summary": "auto"},
        "messages": [{"role": "user", "content": "q"},
                     {"role": "assistant", "content": "", "reasoning": [THOUGHT, plain],
                      "tool_calls": [{"id": "c1", "name": "w", "arguments": "{}"}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}))
    assert body["instructions"] == "sys" and body["store"] is False
    assert [i.get("type", "message") for i in body["input"]] == [
        "message", "reasoning", "function_call", "function_call_output"]
    # Without OpenAI's store only an item with its encrypted content can be read back.
    assert body["input"][1]["encrypted_content"] == "sealed"
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"] == {"summary": "auto"}
    assert body["tools"][0]["name"] == "w" and body["tools"][0]["strict"] is False
    # A model that does not reason is never asked for encrypted reasoning.
    mini = responses_body(call_for({"openai_responses": {"include": [
        "reasoning.encrypted_content"]}, "messages": [{"role": "user", "content": "q"}]},
        model="gpt-4o-mini"))
    assert "include" not in mini


def test_responses_usage_is_normalized_exactly_like_chat_completions() -> None:
    responses = {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
                 "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 25}}
    chat = {"prompt_tokens": 120, "prompt_tokens_details": {"cached_tokens": 100},
            "completion_tokens": 40, "completion_tokens_details": {"reasoning_tokens": 25}}
    assert from_openai_responses(responses) == from_openai(chat) == Usage(
        input_uncached=20, cache_read=100, output=40, reasoning=25)
    reply = reply_of({"id": "resp_x", "model": "gpt-5-mini", "usage": responses, "output": [
        THOUGHT, {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"}]})
    assert reply.finish_reason == "tool_calls" and reply.reasoning == (THOUGHT,)


def test_an_envelope_leaves_empty_reasoning_out() -> None:
    request = parse_request({"team": "web", "feature": "f",
                             "messages": [{"role": "user", "content": "q"}]})
    message = Envelope(request=request, route=result().route).to_message()
    assert "reasoning" not in message["request"]["messages"][0]
    assert "openai_responses" not in message["request"]


def test_for_the_self_hosted_pool_a_tool_loop_renders_without_its_reasoning() -> None:
    from workers.providers.vllm_engine import render_messages

    p = parsed(model="self-hosted", instructions="Be brief.", tools=[
        {"type": "function", "name": "w", "parameters": {"type": "object"}}], input=[
        {"role": "user", "content": "weather?"}, THOUGHT,
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"}])
    rendered = render_messages(parse_request(p.data))
    text = json.dumps(rendered)
    assert [m["role"] for m in rendered][:2] == ["system", "user"]
    assert "Oslo" in text and "sunny" in text and "sealed" not in text
