"""``stream=true``: an answer as OpenAI's server-sent ``chat.completion.chunk`` events.

Requests go through queues, so the answer reaches the front door whole. It is sent as the
role chunk, one content chunk, the finish chunk, the usage chunk (``stream_options``
``include_usage``) and ``[DONE]``: clients written for streaming work unchanged, and their
first token arrives with the last.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from models.domain.result import ChatResult
from queues.http.translate import completion_body, sluice_headers


def completion_chunks(result: ChatResult, *, include_usage: bool,
                      created: int | None = None) -> list[dict[str, Any]]:
    """The chunks a streaming OpenAI client reads for ``result``, in order (no ``[DONE]``)."""
    body = completion_body(result, created=created)
    base: dict[str, Any] = {"id": body["id"], "object": "chat.completion.chunk",
                            "created": body["created"], "model": body["model"],
                            "system_fingerprint": None}
    if include_usage:
        base["usage"] = None  # OpenAI's shape: null on every chunk but the last

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    message = body["choices"][0]["message"]
    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if message["content"]:
        chunks.append(chunk({"content": message["content"]}))
    if message.get("tool_calls"):
        # Each call whole, in one delta: streaming clients merge deltas by index.
        chunks.append(chunk({"tool_calls": [{"index": i, **call} for i, call
                                            in enumerate(message["tool_calls"])]}))
    chunks.append(chunk({}, body["choices"][0]["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks


def event_stream(chunks: list[dict[str, Any]]) -> bytes:
    """Server-sent events for ``chunks``, ended by ``data: [DONE]`` as OpenAI ends them."""
    events = [b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"
              for c in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


def stream_response(result: ChatResult, *, include_usage: bool) -> Response:
    """The whole event stream in one body, with the ``x-sluice-*`` headers: the answer is
    complete before the first byte, so nothing is held open and no error can arrive mid-stream."""
    return Response(event_stream(completion_chunks(result, include_usage=include_usage)),
                    media_type="text/event-stream",
                    headers={**sluice_headers(result), "cache-control": "no-cache"})
