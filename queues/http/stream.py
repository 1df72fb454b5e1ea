"""``stream=true``: answers as OpenAI's server-sent ``chat.completion.chunk`` events.

Two ways in: :func:`stream_response` sends an answer the door already holds whole (a cache
hit, a self-hosted answer) as the role chunk, one content chunk, the tool calls, the finish
chunk, the usage chunk (``stream_options.include_usage``) and ``[DONE]``;
:mod:`queues.http.relay` builds the same sequence piece by piece while a worker generates it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import Response

from models.domain.result import ChatResult
from queues.http.translate import completion_body, sluice_headers

DONE = b"data: [DONE]\n\n"


class Chunks:
    """The chunk objects of one streamed completion."""

    def __init__(self, request_id: str, model: str, *, include_usage: bool,
                 created: int | None = None) -> None:
        self.base: dict[str, Any] = {"id": f"chatcmpl-{request_id}",
                                     "object": "chat.completion.chunk",
                                     "created": created or int(time.time()), "model": model,
                                     "system_fingerprint": None}
        self.include_usage = include_usage
        if include_usage:
            self.base["usage"] = None  # OpenAI's shape: null on every chunk but the last

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A chunk carrying ``delta``."""
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}

    def opening(self) -> dict[str, Any]:
        """The first chunk: the assistant's role."""
        return self.delta({"role": "assistant", "content": "", "refusal": None})

    def text(self, piece: str) -> dict[str, Any]:
        """A piece of the answer's text."""
        return self.delta({"content": piece})

    def ending(self, result: ChatResult) -> list[dict[str, Any]]:
        """After the text: the tool calls, the finish reason, and the usage when asked for."""
        body = completion_body(result, created=self.base["created"])
        message, out = body["choices"][0]["message"], []
        if message.get("tool_calls"):
            # Each call whole, in one delta: streaming clients merge deltas by index.
            out.append(self.delta({"tool_calls": [{"index": i, **call} for i, call
                                                  in enumerate(message["tool_calls"])]}))
        out.append(self.delta({}, body["choices"][0]["finish_reason"]))
        if self.include_usage:
            out.append({**self.base, "model": result.model, "choices": [],
                        "usage": body["usage"]})
        return out


def completion_chunks(result: ChatResult, *, include_usage: bool,
                      created: int | None = None) -> list[dict[str, Any]]:
    """The chunks a streaming OpenAI client reads for ``result``, in order (no ``[DONE]``)."""
    make = Chunks(result.request_id, result.model, include_usage=include_usage,
                  created=created)
    head = [make.opening()] + ([make.text(result.text)] if result.text else [])
    return head + make.ending(result)


def event(chunk: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def event_stream(chunks: list[dict[str, Any]]) -> bytes:
    """Server-sent events for ``chunks``, ended by ``data: [DONE]`` as OpenAI ends them."""
    return b"".join(event(c) for c in chunks) + DONE


def stream_response(result: ChatResult, *, include_usage: bool) -> Response:
    """The whole event stream in one body, with the ``x-sluice-*`` headers: the answer is
    complete before the first byte, so nothing is held open and no error can arrive mid-stream."""
    return Response(event_stream(completion_chunks(result, include_usage=include_usage)),
                    media_type="text/event-stream",
                    headers={**sluice_headers(result), "cache-control": "no-cache"})
