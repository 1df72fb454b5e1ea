"""Tool calls through the front door, from either provider, streamed or not, and a tool loop."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.frontdoor_support import row, user

pytestmark = pytest.mark.integration


TOOLS = [{"type": "function", "function": {
    "name": "find_sku", "description": "Look a product up by its SKU.",
    "parameters": {"type": "object", "properties": {"request": {"type": "string"}}}}}]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_tool_calls_reach_the_sdk_from_either_provider(client: openai.OpenAI, sessions: Any,
                                                       model: str) -> None:
    ask = user("Please use tool find_sku for SKU 42")
    raw = client.chat.completions.with_raw_response.create(model=model, messages=[ask],
                                                           tools=TOOLS, max_tokens=60)
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "find_sku" and call.id
    assert "SKU 42" in json.loads(call.function.arguments)["request"]
    assert row(sessions, raw.headers["x-sluice-request-id"]).cost > 0
    # The loop goes on as the SDK's docs show it: the SDK's own message, then the result.
    after = client.chat.completions.create(model=model, tools=TOOLS, max_tokens=30, messages=[
        ask, choice.message,  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": '{"price": "12.50"}'}])
    assert after.choices[0].finish_reason in ("stop", "length")
    assert after.choices[0].message.content and not after.choices[0].message.tool_calls
    # Streamed, the SDK's chunks carry the same call (indexed, whole in one delta).
    streamed = client.chat.completions.create(
        model=model, messages=[user("Please use tool find_sku for SKU 7")], tools=TOOLS,
        max_tokens=60, stream=True)
    deltas = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name) for d in deltas if d.function] == [(0, "find_sku")]
    assert "SKU 7" in json.loads(deltas[0].function.arguments)["request"]
