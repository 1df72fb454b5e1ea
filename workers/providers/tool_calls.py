"""Tool calls out of each provider's answer, into one shape (OpenAI's: arguments as JSON text)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from models.domain.request import ToolCall


def calls_in_openai_message(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The function calls of a chat-completions ``message`` (a JSON object)."""
    out = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        out.append(ToolCall(id=str(call.get("id", "")), name=str(fn.get("name", "")),
                            arguments=str(fn.get("arguments") or "{}")))
    return tuple(out)


def calls_in_anthropic_content(blocks: Iterable[Any]) -> tuple[ToolCall, ...]:
    """The ``tool_use`` blocks of an Anthropic message's content (SDK objects or dicts)."""
    out = []
    for block in blocks:
        get = block.get if isinstance(block, dict) else lambda k, b=block: getattr(b, k, None)
        if get("type") != "tool_use":
            continue
        # Anthropic sends the input as an object; OpenAI's shape, ours, is its JSON text.
        out.append(ToolCall(id=str(get("id") or ""), name=str(get("name") or ""),
                            arguments=_compact(get("input") or {})))
    return tuple(out)


def anthropic_streamed_call(call_id: str, name: str, partial_json: str) -> ToolCall:
    """A ``tool_use`` block assembled from its streamed JSON pieces: compact, as a whole answer
    gives it; as sent when ``max_tokens`` cut it short (the answer is paid for: never fail)."""
    raw = partial_json or "{}"
    try:
        arguments = _compact(json.loads(raw))
    except (ValueError, RecursionError):
        arguments = raw
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
