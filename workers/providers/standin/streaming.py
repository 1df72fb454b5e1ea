"""``stream: true`` in both wire formats: a built answer replayed as server-sent events.

The first event leaves after the call's base latency (time to first token), and each text
piece after the per-token latency of its tokens, so a client sees tokens arrive as from the
real APIs. Pieces are a few words each; usage comes last, as the providers send it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from models.domain.tokens import count_text

#: Text pieces of about this many words, each its own delta.
WORDS_PER_PIECE = 3
_PIECE = re.compile(r"(?:\S+\s*){1,%d}" % WORDS_PER_PIECE)


def pieces(text: str) -> list[str]:
    """``text`` cut into a few words per piece; joined back they are ``text`` exactly."""
    found = _PIECE.findall(text)
    head = text[: len(text) - len(text.lstrip())]
    if found and head:
        found[0] = head + found[0]
    return found or ([text] if text else [])


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


def openai_events(payload: dict[str, Any], include_usage: bool) -> Iterator[tuple[bytes, str]]:
    """``(event bytes, text it carries)`` for a ``chat.completion`` payload, then ``[DONE]``."""
    base = {k: payload[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    if include_usage:
        base["usage"] = None
    choice = payload["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": "", "refusal": None}), ""
    for piece in pieces(message.get("content") or ""):
        yield chunk({"content": piece}), piece
    for i, call in enumerate(message.get("tool_calls") or ()):
        yield chunk({"tool_calls": [{"index": i, **call}]}), ""
    yield chunk({}, choice["finish_reason"]), ""
    if include_usage:
        yield _sse({**base, "choices": [], "usage": payload["usage"]}), ""
    yield b"data: [DONE]\n\n", ""


def anthropic_events(payload: dict[str, Any]) -> Iterator[tuple[bytes, str]]:
    """``(event bytes, text it carries)`` for a ``message`` payload, Messages-API style."""
    usage = payload["usage"]
    start = {**payload, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    yield _sse({"type": "message_start", "message": start}, "message_start"), ""
    for i, block in enumerate(payload["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
        elif block["type"] == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
        elif block["type"] == "redacted_thinking":
            opening = dict(block)  # whole in its start event, as Anthropic sends it
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        yield _sse({"type": "content_block_start", "index": i, "content_block": opening},
                   "content_block_start"), ""
        if block["type"] == "redacted_thinking":
            pass
        elif block["type"] == "thinking":
            for piece in pieces(block["thinking"]):
                yield _sse({"type": "content_block_delta", "index": i,
                            "delta": {"type": "thinking_delta", "thinking": piece}},
                           "content_block_delta"), piece
            yield _sse({"type": "content_block_delta", "index": i,
                        "delta": {"type": "signature_delta", "signature": block["signature"]}},
                       "content_block_delta"), ""
        elif block["type"] == "text":
            for piece in pieces(block["text"]):
                yield _sse({"type": "content_block_delta", "index": i,
                            "delta": {"type": "text_delta", "text": piece}},
                           "content_block_delta"), piece
        else:
            partial = json.dumps(block["input"], separators=(",", ":"))
            yield _sse({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": partial}},
                       "content_block_delta"), ""
        yield _sse({"type": "content_block_stop", "index": i}, "content_block_stop"), ""
    yield _sse({"type": "message_delta",
                "delta": {"stop_reason": payload["stop_reason"],
                          "stop_sequence": payload["stop_sequence"]},
                "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta"), ""
    yield _sse({"type": "message_stop"}, "message_stop"), ""


async def paced(events: Iterator[tuple[bytes, str]], first_s: float, per_token_s: float,
                pause: Any) -> AsyncIterator[bytes]:
    """Send ``events``: the first after ``first_s``, each text piece after its tokens' time."""
    await pause(first_s)
    for raw, text in events:
        if text and per_token_s > 0:
            await pause(per_token_s * count_text(text))
        yield raw
