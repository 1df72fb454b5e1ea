"""Anthropic Messages bodies to ChatRequest fields and ChatResults back, errors and events."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from models.db.api_keys import KeyInfo
from models.domain.errors import ValidationError
from models.domain.request import ToolCall, parse_request
from models.domain.result import ChatResult, Route
from models.domain.usage import Usage
from queues.http.errors import Problem
from queues.http.wire.anthropic_messages import AnthropicMessages
from queues.http.wire.anthropic_messages_render import Events, error_response, message_body

KEY = KeyInfo(id="k1", org="o", team="t", role="team")
WIRE = AnthropicMessages()


def parse(body: dict[str, Any], **headers: str) -> Any:
    full = {"model": "claude-haiku-4-5", "max_tokens": 16, **body}
    return WIRE.parse(full, {k.replace("_", "-"): v for k, v in headers.items()}, KEY)


def test_blocks_become_the_static_part_and_tool_loop_turns() -> None:
    parsed = parse({
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B",
                                                   "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "find", "input_schema": {"type": "object"},
                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "metadata": {"user_id": "user_" + "x" * 80},
        "messages": [
            {"role": "user", "content": "find 42"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "find", "input": {"q": 42}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "gone",
                 "is_error": True},
                {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]}]},
        anthropic_beta="b1", anthropic_version="2023-06-01")
    req = parse_request(parsed.data)
    assert req.static.system == "A\n\nB" and req.static.tools[0].name == "find"
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "user"]
    assert req.messages[1].tool_calls[0].arguments == '{"q":42}'
    assert req.messages[2].content == "Error: gone"
    assert [(m.at, m.index, m.ttl) for m in req.cache_marks] == [
        ("tools", 0, "1h"), ("system", len("A\n\nB"), "5m"), ("messages", 3, "5m")]
    assert req.provider_headers == {"anthropic-beta": "b1", "anthropic-version": "2023-06-01"}
    assert req.user is not None and req.user.startswith("u-") and len(req.user) <= 64


def test_thinking_tool_choice_sampling_and_images_map_to_the_neutral_fields() -> None:
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9a"
           "wAAAABJRU5ErkJggg==")
    parsed = parse({
        "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "find", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "find", "disable_parallel_tool_use": True},
        "top_p": 0.97, "top_k": 40,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": png}}]}]})
    req = parse_request(parsed.data)
    assert req.thinking_budget == 2048 and (req.top_p, req.top_k) == (0.97, 40)
    assert req.tool_choice is not None and (req.tool_choice.mode, req.tool_choice.name) == (
        "function", "find")
    assert req.parallel_tool_calls is False
    assert req.messages[0].content == "what is it?" and len(req.messages[0].images) == 1
    assert parse_request(parse({"tool_choice": {"type": "any"}, "tools": [
        {"name": "f", "input_schema": {}}], "messages": [{"role": "user", "content": "x"}]}
    ).data).tool_choice.mode == "required"  # type: ignore[union-attr]


def test_dated_claude_ids_are_their_catalogue_alias() -> None:
    for sent, model in (("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
                        ("claude-haiku-4-5-latest", "claude-haiku-4-5"),
                        ("claude-haiku-4-5", "claude-haiku-4-5"), ("gpt-4o-mini", "gpt-4o-mini")):
        assert parse({"model": sent, "messages": [{"role": "user", "content": "x"}]}
                     ).data["model"] == model


@pytest.mark.parametrize(("body", "field"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"thinking": {"type": "enabled"}}, "thinking"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice"),
    ({"container": "x"}, "container"),
    ({"tools": [{"type": "web_search_20250305", "name": "web"}]}, "tools"),
    ({"system": [{"type": "image"}]}, "system"),
])
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse({"messages": [{"role": "user", "content": "hi"}], **body})
    assert exc.value.field == field


def result(text: str, calls: tuple[ToolCall, ...] = (), finish: str = "stop") -> ChatResult:
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    return ChatResult(request_id="r1", text=text, provider="openai", model="gpt-4o-mini",
                      route=route, usage=Usage(input_uncached=10, cache_read=100,
                                               cache_write_5m=5, output=7),
                      cost=Decimal("0.001"), tool_calls=calls, finish_reason=finish)


def test_a_result_renders_as_a_message_with_anthropics_usage() -> None:
    body = message_body(result("hi", (ToolCall(id="c1", name="f", arguments='{"a":1}'),),
                               "tool_calls"))
    assert body["content"] == [{"type": "text", "text": "hi"},
                               {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"]["input_tokens"] == 10  # cached tokens excluded, as Anthropic's
    assert body["usage"]["cache_read_input_tokens"] == 100
    assert body["usage"]["cache_creation_input_tokens"] == 5


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n")[:-1]:
        head, data = block.split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_a_whole_answer_streams_as_anthropics_sequence() -> None:
    got = events(Events("r1", "m").whole(result("hi")))
    assert [k for k, _ in got] == ["message_start", "content_block_start", "ping",
                                   "content_block_delta", "content_block_stop",
                                   "message_delta", "message_stop"]
    only_call = events(Events("r1", "m").whole(result("", (ToolCall(id="c", name="f"),),
                                                      "tool_calls")))
    starts = [d for k, d in only_call if k == "content_block_start"]
    assert starts == [{"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "c", "name": "f", "input": {}}}]


def test_errors_take_anthropics_types_and_shedding_is_529() -> None:
    shed = error_response(Problem(503, "busy", code="overloaded", retry=True, retry_after=1))
    assert shed.status_code == 529 and shed.headers["x-should-retry"] == "true"
    assert json.loads(bytes(shed.body))["error"]["type"] == "overloaded_error"
    for status, kind in ((400, "invalid_request_error"), (401, "authentication_error"),
                         (403, "permission_error"), (404, "not_found_error"),
                         (429, "rate_limit_error"), (500, "api_error")):
        body = json.loads(bytes(error_response(Problem(status, "x")).body))
        assert body == {"type": "error", "error": {"type": kind, "message": "x"}}
    event = events(Events("r", "m").error(Problem(503, "busy", code="overloaded")))
    assert event == [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                           "message": "busy",
                                                           "code": "overloaded"}})]


def test_thinking_blocks_sent_back_are_kept_on_their_turn_unchanged() -> None:
    req = parse_request(parse({"messages": [
        {"role": "user", "content": "find 42"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "find", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "x"}]}]}).data)
    assert [b.to_anthropic() for b in req.messages[1].thinking] == [
        {"type": "thinking", "thinking": "hm", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"}]
    with pytest.raises(ValidationError) as exc:  # a thinking block without its signature
        parse({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "c"}]})
    assert exc.value.field == "messages"


def thoughtful(**kw: Any) -> ChatResult:
    from models.domain.thinking import ThinkingBlock

    return result("answer", **kw).model_copy(update={"thinking": (
        ThinkingBlock(thinking="let me see", signature="sig"),
        ThinkingBlock(type="redacted_thinking", data="enc"))})


def test_thinking_renders_first_and_a_stop_sequence_is_named() -> None:
    body = message_body(thoughtful().model_copy(update={"stop_sequence": "END"}))
    assert [b["type"] for b in body["content"]] == ["thinking", "redacted_thinking", "text"]
    assert body["content"][0] == {"type": "thinking", "thinking": "let me see",
                                  "signature": "sig"}
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    plain = message_body(result("hi"))
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)


def test_streamed_thinking_opens_its_own_blocks_before_the_text() -> None:
    enc = Events("r1", "m")
    raw = enc.opening() + enc.part("thinking", "let ") + enc.part("thinking", "me see")
    raw += enc.part("signature", "sig") + enc.part("redacted_thinking", "enc")
    raw += enc.text("ans") + enc.text("wer")
    raw += enc.ending(thoughtful(calls=(ToolCall(id="c", name="f"),), finish="tool_calls"))
    got = events(raw)
    starts = [(d["index"], d["content_block"]["type"]) for k, d in got
              if k == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "redacted_thinking"), (2, "text"), (3, "tool_use")]
    deltas = [(d["index"], d["delta"]["type"]) for k, d in got if k == "content_block_delta"]
    assert deltas == [(0, "thinking_delta"), (0, "thinking_delta"), (0, "signature_delta"),
                      (2, "text_delta"), (2, "text_delta"), (3, "input_json_delta")]
    stops = [d["index"] for k, d in got if k == "content_block_stop"]
    assert stops == [0, 1, 2, 3]  # each block closed once, in order
    assert [k for k, _ in got].count("ping") == 1
    # The same answer held whole streams the same blocks (a cache hit).
    whole = events(Events("r1", "m").whole(thoughtful()))
    assert [d["content_block"]["type"] for k, d in whole if k == "content_block_start"] == [
        "thinking", "redacted_thinking", "text"]


#: A Messages tool loop with thinking: what a coding agent sends back on its next turn.
AGENT_LOOP = {
    "system": [{"type": "text", "text": "You look things up."}],
    "tools": [{"name": "find", "description": "Finds a part.",
               "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}}],
    "messages": [
        {"role": "user", "content": "find 42"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "the user wants part 42", "signature": "sig-xyz"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "find", "input": {"q": 42}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "bolt, 3 left"}]},
            {"type": "text", "text": "and the price?"}]}]}


def test_for_the_in_process_self_hosted_engine_a_messages_tool_loop_renders_without_thinking(
        ) -> None:
    """Routed to the self-hosted tier, Claude's signed thinking stays out of the chat template;
    the call is the tool hint's JSON, the result and the next text one user turn."""
    from workers.providers.vllm_engine import render_messages

    req = parse_request(parse({"model": "self-hosted", **AGENT_LOOP}).data)
    rendered = render_messages(req)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    system, _, assistant, result = rendered
    assert system["content"].startswith("You look things up.\n\n# Tools")
    assert '"name":"find"' in system["content"]
    assert assistant["content"] == 'Looking.\n{"arguments":{"q":42},"tool":"find"}'
    assert result["content"] == ("Result of tool call toolu_1:\nbolt, 3 left\n\n"
                                 "and the price?")
    text = json.dumps(rendered)
    assert "sig-xyz" not in text and "wants part 42" not in text


def test_for_a_self_hosted_server_pool_a_messages_tool_loop_is_openai_chat_without_thinking(
        tmp_path: Any) -> None:
    """An OpenAI-compatible pool (vLLM, SGLang, TGI) gets chat-completions turns: the tool_use
    as an assistant tool call, the tool_result as a ``tool`` message naming it, no thinking."""
    from pathlib import Path

    from models.domain.catalogue import load_catalogue
    from workers.providers.base import ProviderCall
    from workers.providers.shaping import openai_chat_body

    shipped = (Path(__file__).parents[2] / "models" / "data" / "prices.toml").read_text()
    path = tmp_path / "prices.toml"
    path.write_text(shipped + '''
[models.llama-pool]
provider = "openai_compatible"
tier = "self-hosted"
context = 131072
api_name = "meta-llama/Llama-3.1-8B-Instruct"
base_url = "http://127.0.0.1:1/v1"
pricing = "gpu_pool"
capabilities = ["tools", "sampling"]
''')
    pool = load_catalogue(path).get("llama-pool")
    req = parse_request(parse({"model": "self-hosted", **AGENT_LOOP}).data)
    body = openai_chat_body(ProviderCall(request=req, model=pool))
    assert body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert body["tools"] == [{"type": "function", "function": {
        "name": "find", "description": "Finds a part.",
        "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}]
    system, user, assistant, tool, after = body["messages"]
    assert system == {"role": "system", "content": "You look things up."}
    assert user == {"role": "user", "content": "find 42"}
    assert assistant["role"] == "assistant" and assistant["content"] == "Looking."
    [call] = assistant["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("toolu_1", "function", "find")
    assert json.loads(call["function"]["arguments"]) == {"q": 42}
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "bolt, 3 left"}
    assert after == {"role": "user", "content": "and the price?"}
    text = json.dumps(body)
    assert "sig-xyz" not in text and "wants part 42" not in text and "thinking" not in text
