"""Extended thinking and stop sequences through the Messages door with the anthropic SDK:
signed thinking blocks returned and streamed, a thinking tool loop run to completion with them
sent back (the stand-in refuses one without, as Anthropic does), redacted thinking, and the
stop sequence that ended an answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.e2e.frontdoor_support import row
from tests.e2e.messages_support import CLAUDE, said, tools
from workers.providers.standin.thinking import REDACTED_TRIGGER

pytestmark = pytest.mark.integration
THINKER = "claude-sonnet-4-6"  # a Claude model the catalogue lets reason
THINK = {"type": "enabled", "budget_tokens": 1500}


@pytest.fixture(scope="module")
def claude(door: str, team_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=team_key, base_url=door, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def direct(standin: Any) -> Iterator[anthropic.Anthropic]:
    """The SDK on the stand-in itself: what the real API does with a thinking tool loop."""
    with anthropic.Anthropic(api_key="k", base_url=standin.anthropic_base_url,
                             max_retries=0) as c:
        yield c


def _sent(standin: Any, marker: str) -> list[dict[str, Any]]:
    return [got["body"] for got in standin.received(contains=marker)]


def _loop(claude: anthropic.Anthropic, standin: Any, sessions: Any, *, stream: bool,
          ask: str) -> tuple[Any, Any]:
    """A thinking tool loop to its end: the call, the tool's result, the answer."""
    marker = uuid.uuid4().hex
    defs = tools(4)
    history: list[Any] = [{"role": "user", "content": f"{ask} use tool tool_2 {marker}"}]

    def turn() -> tuple[Any, str]:
        args: dict[str, Any] = {"model": THINKER, "max_tokens": 3000, "thinking": THINK,
                                "tools": defs, "messages": history}
        if not stream:
            raw = claude.messages.with_raw_response.create(**args)
            return raw.parse(), raw.headers["x-sluice-request-id"]
        kinds: set[str] = set()
        with claude.messages.stream(**args) as s:
            for event in s:
                if event.type == "content_block_delta":
                    kinds.add(event.delta.type)
            msg = s.get_final_message()
            rid = s.response.headers["x-sluice-request-id"]
        # Thinking streams as Anthropic streams it, piece by piece, then its signature.
        assert {"thinking_delta", "signature_delta"} <= kinds
        return msg, rid

    first, _ = turn()
    assert first.stop_reason == "tool_use"
    assert first.content[0].type == "thinking" and first.content[0].signature
    call = next(b for b in first.content if b.type == "tool_use")
    # Sent back as the SDK returned them: thinking blocks and all, unchanged.
    history += [{"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                              "content": "12.50 EUR"}]}]
    final, rid = turn()
    assert final.stop_reason == "end_turn" and final.content[-1].type == "text"
    assert final.content[0].type == "thinking"
    sent = _sent(standin, marker)[-1]
    assert sent["thinking"] == THINK
    back = [b for b in sent["messages"][1]["content"] if b["type"] != "tool_use"]
    assert back == [b.model_dump(exclude_none=True) for b in first.content
                    if b.type != "tool_use"]
    r = row(sessions, rid)
    assert r.outcome == "ok" and 0 < r.reasoning < r.output == final.usage.output_tokens
    return first, final


def test_a_thinking_tool_loop_runs_to_completion(claude: anthropic.Anthropic, standin: Any,
                                                 sessions: Any) -> None:
    _loop(claude, standin, sessions, stream=False, ask=said("Price?"))


def test_a_streamed_thinking_tool_loop_runs_to_completion(
        claude: anthropic.Anthropic, standin: Any, sessions: Any) -> None:
    _loop(claude, standin, sessions, stream=True, ask=said("Price?"))


@pytest.mark.parametrize("stream", [False, True])
def test_redacted_thinking_comes_back_and_is_accepted_again(
        claude: anthropic.Anthropic, standin: Any, sessions: Any, stream: bool) -> None:
    first, _ = _loop(claude, standin, sessions, stream=stream,
                     ask=said(f"Price? {REDACTED_TRIGGER}"))
    kinds = [b.type for b in first.content]
    assert kinds[:2] == ["thinking", "redacted_thinking"] and first.content[1].data


def test_the_provider_refuses_a_thinking_tool_loop_without_its_thinking(
        direct: anthropic.Anthropic) -> None:
    defs = tools(2)
    ask = [{"role": "user", "content": said("Price? use tool tool_1")}]
    first = direct.messages.create(model=THINKER, max_tokens=3000, thinking=THINK, tools=defs,
                                   messages=ask)
    call = next(b for b in first.content if b.type == "tool_use")
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                           "content": "3 EUR"}]}
    bare = [b for b in first.content if b.type == "tool_use"]
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        direct.messages.create(model=THINKER, max_tokens=3000, thinking=THINK, tools=defs,
                               messages=[*ask, {"role": "assistant", "content": bare}, result])
    forged = [{"type": "thinking", "thinking": "something else",
               "signature": first.content[0].signature}, *bare]  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        direct.messages.create(model=THINKER, max_tokens=3000, thinking=THINK, tools=defs,
                               messages=[*ask, {"role": "assistant", "content": forged}, result])
    ok = direct.messages.create(model=THINKER, max_tokens=3000, thinking=THINK, tools=defs,
                                messages=[*ask, {"role": "assistant", "content": first.content},
                                          result])
    assert ok.stop_reason == "end_turn"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_is_reported_with_the_one_that_matched(
        claude: anthropic.Anthropic, stream: bool) -> None:
    ask = [{"role": "user", "content": said("Tell me about the sea.")}]
    whole = claude.messages.create(model=CLAUDE, max_tokens=200, messages=ask)
    text = whole.content[0].text  # type: ignore[union-attr]
    word = " " + text.split(" ")[2]
    args: dict[str, Any] = {"model": CLAUDE, "max_tokens": 200, "messages": ask,
                            "stop_sequences": ["zzz-never", word]}
    if stream:
        with claude.messages.stream(**args) as s:
            msg = s.get_final_message()
    else:
        msg = claude.messages.create(**args)
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", word)
    assert msg.content[0].text == text[:text.index(word)]  # type: ignore[union-attr]
    assert whole.stop_reason == "end_turn" and whole.stop_sequence is None


def test_the_chat_door_says_stop_for_a_stop_sequence_on_claude(door: str, team_key: str) -> None:
    import openai

    with openai.OpenAI(api_key=team_key, base_url=door + "/v1", max_retries=0) as oai:
        ask = [{"role": "user", "content": said("Tell me about the sea.")}]
        whole = oai.chat.completions.create(model=CLAUDE, max_tokens=200, messages=ask)
        text = whole.choices[0].message.content or ""
        word = " " + text.split(" ")[2]
        cut = oai.chat.completions.create(model=CLAUDE, max_tokens=200, messages=ask,
                                          stop=[word])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(word)]
