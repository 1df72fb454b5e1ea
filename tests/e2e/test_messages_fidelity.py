"""The Messages door's generation options through the anthropic SDK: extended thinking billed
as output, tool_choice forms on Claude and on OpenAI, top_k / top_p, images counted as billed."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from PIL import Image

from tests.e2e.frontdoor_support import row
from tests.e2e.messages_support import CLAUDE, tools

pytestmark = pytest.mark.integration
THINKER = "claude-sonnet-4-6"  # a Claude model the catalogue lets reason


@pytest.fixture(scope="module")
def claude(door: str, team_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=team_key, base_url=door, max_retries=0, timeout=30) as c:
        yield c


def received(standin: Any, marker: str) -> dict[str, Any]:
    """The body the stand-in got for the request carrying ``marker``."""
    (got,) = standin.received(contains=marker)
    body: dict[str, Any] = got["body"]
    return body


def test_thinking_reaches_claude_with_its_budget_and_is_billed_as_output(
        claude: anthropic.Anthropic, standin: Any, sessions: Any) -> None:
    marker = uuid.uuid4().hex
    with claude.messages.stream(model=THINKER, max_tokens=3000,
                                thinking={"type": "enabled", "budget_tokens": 1500},
                                messages=[{"role": "user",
                                           "content": f"Think, then title a lamp {marker}"}]
                                ) as stream:
        final = stream.get_final_message()
        rid = stream.response.headers["x-sluice-request-id"]
    assert received(standin, marker)["thinking"] == {"type": "enabled", "budget_tokens": 1500}
    r = row(sessions, rid)
    assert 0 < r.reasoning < r.output == final.usage.output_tokens
    assert final.content[-1].type == "text" and final.content[-1].text


@pytest.mark.parametrize("model", [CLAUDE, "cheap"])
def test_a_named_tool_choice_forces_that_call(claude: anthropic.Anthropic, standin: Any,
                                              model: str) -> None:
    marker = uuid.uuid4().hex
    msg = claude.messages.create(
        model=model, max_tokens=64, tools=tools(5),
        tool_choice={"type": "tool", "name": "tool_3", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": f"What is the price? {marker}"}])
    call = next(b for b in msg.content if b.type == "tool_use")
    assert call.name == "tool_3" and msg.stop_reason == "tool_use"
    sent = received(standin, marker)
    if model == CLAUDE:
        assert sent["tool_choice"] == {"type": "tool", "name": "tool_3",
                                       "disable_parallel_tool_use": True}
    else:  # translated for OpenAI
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "tool_3"}}
        assert sent["parallel_tool_calls"] is False


def test_top_k_and_top_p_reach_claude(claude: anthropic.Anthropic, standin: Any) -> None:
    marker = uuid.uuid4().hex
    claude.messages.create(model=CLAUDE, max_tokens=8, extra_body={"top_k": 40, "top_p": 0.9},
                           messages=[{"role": "user", "content": f"Hi {marker}"}])
    sent = received(standin, marker)
    assert (sent["top_k"], sent["top_p"]) == (40, 0.9) and "temperature" not in sent


def test_an_image_is_sent_and_counted_as_it_is_billed(claude: anthropic.Anthropic,
                                                      standin: Any, sessions: Any) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (900, 600), (20, 120, 200)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    marker = uuid.uuid4().hex
    messages: Any = [{"role": "user", "content": [
        {"type": "text", "text": f"Describe this product {marker}"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": data}}]}]
    counted = claude.messages.count_tokens(model=CLAUDE, messages=messages).input_tokens
    raw = claude.messages.with_raw_response.create(model=CLAUDE, max_tokens=16,
                                                   messages=messages)
    msg = raw.parse()
    # Anthropic's rule for the image; count_tokens is the reservation's bound of the bill.
    assert 600 * 900 // 750 < msg.usage.input_tokens <= counted
    sent = received(standin, marker)
    assert sent["messages"][0]["content"][1]["source"]["type"] == "base64"
    assert row(sessions, raw.headers["x-sluice-request-id"]).input_uncached == \
        msg.usage.input_tokens
