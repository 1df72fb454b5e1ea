"""stream=true answers: the chunk sequence a streaming OpenAI client reads, and its framing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from models.domain.request import ToolCall
from models.domain.result import ChatResult, Route
from models.domain.usage import Usage
from queues.http.stream import stream_response
from queues.http.wire.openai_chat_render import (DONE, Chunks, completion_body,
                                                 completion_chunks, event)


def event_stream(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(event(c) for c in chunks) + DONE


def result(text: str, finish: str = "stop") -> ChatResult:
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    return ChatResult(request_id="r9", text=text, provider="openai", model="gpt-4o-mini",
                      route=route, usage=Usage(input_uncached=10, cache_read=1024, output=5),
                      cost=Decimal("0.00042"), baseline_cost=Decimal("0.01"),
                      finish_reason=finish)


def events(raw: bytes) -> list[Any]:
    """What an SSE reader sees: each ``data:`` line, JSON-decoded except the ``[DONE]`` mark."""
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chunks_rebuild_the_answer_and_end_with_usage_then_done() -> None:
    got = events(event_stream(completion_chunks(result("Brass lamp, 40 cm"),
                                                include_usage=True, created=7)))
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-r9"} and {c["created"] for c in chunks} == {7}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Brass lamp, 40 cm"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    # Usage comes once, last, with no choices; every other chunk carries usage: null.
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1034
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 1024}
    assert all(c["usage"] is None for c in chunks[:-1])


def test_without_include_usage_no_usage_key_and_an_empty_answer_has_no_content_chunk() -> None:
    chunks = completion_chunks(result("", finish="length"), include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_the_response_is_an_event_stream_with_the_sluice_headers() -> None:
    resp = stream_response(result("ok"), Chunks("r9", "gpt-4o-mini", include_usage=False))
    assert resp.media_type == "text/event-stream"
    assert resp.headers["x-sluice-cost"] == "0.00042" and resp.headers["x-sluice-cache"] == "miss"
    assert resp.headers["cache-control"] == "no-cache"
    assert events(bytes(resp.body))[-1] == "[DONE]"


def test_tool_calls_get_a_delta_of_their_own_and_null_content_in_the_body() -> None:
    called = result("").model_copy(update={"finish_reason": "tool_calls", "tool_calls": (
        ToolCall(id="call_1", name="find_sku", arguments='{"sku":"42"}'),
        ToolCall(id="call_2", name="stock", arguments="{}"))})
    chunks = completion_chunks(called, include_usage=False)
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks
             if "tool_calls" in c["choices"][0]["delta"]]
    assert calls == [[{"index": 0, "id": "call_1", "type": "function",
                       "function": {"name": "find_sku", "arguments": '{"sku":"42"}'}},
                      {"index": 1, "id": "call_2", "type": "function",
                       "function": {"name": "stock", "arguments": "{}"}}]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    message = completion_body(called)["choices"][0]["message"]
    assert message["content"] is None and [c["id"] for c in message["tool_calls"]] == [
        "call_1", "call_2"]
    assert "tool_calls" not in completion_body(result("hi"))["choices"][0]["message"]
