"""``/v1/messages`` with ``stream: true``: Anthropic's event sequence relayed token by token,
tool calls as ``input_json_delta``s, an error after the first byte as an ``error`` event the
SDK raises, and 529 ``overloaded_error`` when the door sheds."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import pytest

from tests.e2e.frontdoor_support import mint, row
from tests.e2e.messages_support import CLAUDE, said, tools

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def claude(door: str, team_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=team_key, base_url=door, max_retries=0, timeout=30) as c:
        yield c


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of each named server-sent event."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            head, data = block.split("\n", 1)
            assert head.startswith("event: ") and data.startswith("data: ")
            out.append((head[len("event: "):], json.loads(data[len("data: "):])))
    return out


def test_messages_stream_relays_text_as_the_provider_generates_it(
        claude: anthropic.Anthropic, sessions: Any, standin: Any) -> None:
    with claude.messages.stream(model=CLAUDE, max_tokens=4, messages=[  # warm the stream path
            {"role": "user", "content": said("Hi")}]) as warm:
        warm.get_final_message()
    standin.script_faults(["slow=40"], path="anthropic", model=CLAUDE)
    t0 = time.monotonic()
    arrivals: list[float] = []
    with claude.messages.stream(model=CLAUDE, max_tokens=24,
                                messages=[{"role": "user", "content": said("Title: desk")}],
                                extra_headers={"x-sluice-feature": "agent-stream"}) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic() - t0)
        final = stream.get_final_message()
        rid = stream.response.headers["x-sluice-request-id"]
    total = time.monotonic() - t0
    assert len(arrivals) >= 3 and arrivals[0] < 0.6 * total, (arrivals, total)
    assert final.content[0].type == "text" and final.content[0].text
    r = row(sessions, rid)
    assert (r.feature, r.outcome, r.model) == ("agent-stream", "ok", CLAUDE)
    # message_delta carries the whole usage: the SDK's final message is the ledger's.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (r.input_uncached, r.output)


def test_the_event_sequence_is_anthropics(door: str, team_key: str, standin: Any) -> None:
    standin.script_faults(["slow=20"], path="anthropic", model=CLAUDE)
    r = httpx.post(door + "/v1/messages", timeout=30,
                   headers={"x-api-key": team_key, "anthropic-version": "2023-06-01"},
                   json={"model": CLAUDE, "max_tokens": 16, "stream": True,
                         "messages": [{"role": "user", "content": said("Title: rug")}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    kinds = [k for k, _ in sse_events(r.content)]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") >= 2
    events = sse_events(r.content)
    assert all(d["type"] == k for k, d in events)
    delta = next(d for k, d in events if k == "message_delta")
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert delta["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("model", [CLAUDE, "cheap"])
def test_a_streamed_tool_call_arrives_as_a_tool_use_block(claude: anthropic.Anthropic,
                                                          model: str) -> None:
    with claude.messages.stream(model=model, max_tokens=64, tools=tools(4),
                                messages=[{"role": "user",
                                           "content": said("Stock? use tool tool_2")}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "tool_2" and isinstance(call.input, dict)


def test_the_async_sdk_streams_too(door: str, team_key: str) -> None:
    async def run() -> str:
        async with anthropic.AsyncAnthropic(api_key=team_key, base_url=door,
                                            max_retries=0) as ac:
            async with ac.messages.stream(model=CLAUDE, max_tokens=12, messages=[
                    {"role": "user", "content": said("Rephrase: jug")}]) as stream:
                parts = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
        assert "".join(parts) == final.content[0].text
        return final.content[0].text

    assert asyncio.run(run())


def test_a_repeat_is_streamed_whole_from_the_response_cache(claude: anthropic.Anthropic
                                                            ) -> None:
    ask = {"model": CLAUDE, "max_tokens": 16,
           "messages": [{"role": "user", "content": said("Title: stool")}]}
    with claude.messages.stream(**ask) as first:
        text = first.get_final_message().content[0].text
    with claude.messages.stream(**ask) as again:
        assert again.get_final_message().content[0].text == text
        assert again.response.headers["x-sluice-cache"] == "hit"


def test_an_error_after_the_first_byte_is_an_error_event_the_sdk_raises(
        claude: anthropic.Anthropic, standin: Any) -> None:
    # 200 ms a token and a caller who waits 1 s: the door's wait ends after the first piece.
    standin.script_faults(["slow=200"], path="anthropic", model=CLAUDE)
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        with claude.messages.stream(model=CLAUDE, max_tokens=40,
                                    messages=[{"role": "user",
                                               "content": said("Write a long title")}],
                                    extra_headers={"x-sluice-timeout": "1"}) as stream:
            got.extend(stream.text_stream)
    assert got, "the error must come after some text"
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "timeout_error"


def test_shedding_is_a_529_overloaded_error_and_nothing_is_billed(
        small_door: str, pg_url: str, standin: Any) -> None:
    sdk = anthropic.Anthropic(api_key=mint(pg_url, "shed-agent"), base_url=small_door,
                              max_retries=0, timeout=60)
    standin.script_faults(["timeout=3", "timeout=3"], path="anthropic", model=CLAUDE)

    def ask(tag: str) -> Any:
        return sdk.messages.create(model=CLAUDE, max_tokens=8, messages=[
            {"role": "user", "content": f"{tag} {uuid.uuid4().hex}"}])

    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(ask, "slow") for _ in range(2)]
        time.sleep(1.0)  # both are in flight, held by the slow provider
        before = standin.stats()["requests"]
        with pytest.raises(anthropic.InternalServerError) as exc:
            ask("shed")
        assert standin.stats()["requests"] == before
        answers = [f.result(timeout=60) for f in slow]
    assert exc.value.status_code == 529
    assert exc.value.body["error"]["type"] == "overloaded_error"
    assert exc.value.response.headers["x-should-retry"] == "true"
    assert all(a.content for a in answers)
    sdk.close()
