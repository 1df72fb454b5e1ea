"""ChatResults as OpenAI ``chat.completion`` bodies and ``chat.completion.chunk`` events."""

from __future__ import annotations

import json
import time
from typing import Any

from models.domain.request import openai_tool_calls
from models.domain.result import ChatResult
from queues.http.errors import Problem, openai_error

DONE = b"data: [DONE]\n\n"
_FINISH = {"stop", "length", "tool_calls", "content_filter"}


def completion_body(result: ChatResult, *, created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` object for ``result`` (usage counts cached prompt tokens in)."""
    u = result.usage
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.tool_calls:
        # OpenAI's shape: content is null when the model only called tools.
        message["content"] = result.text or None
        message["tool_calls"] = openai_tool_calls(result.tool_calls)
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": result.model,
        "choices": [{"index": 0, "logprobs": None if result.logprobs is None else {
                         "content": list(result.logprobs), "refusal": None},
                     "finish_reason": result.finish_reason if result.finish_reason in _FINISH
                     else "stop",
                     "message": message}],
        "usage": {
            # OpenAI's convention: prompt_tokens INCLUDES the cached ones.
            "prompt_tokens": u.input_total, "completion_tokens": u.output,
            "total_tokens": u.input_total + u.output,
            "prompt_tokens_details": {"cached_tokens": u.cache_read},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning},
        },
        "system_fingerprint": None,
    }


def event(chunk: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class Chunks:
    """The chunk events of one streamed completion (an :class:`~queues.http.wire.base.Encoder`)."""

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

    def opening_chunk(self) -> dict[str, Any]:
        """The first chunk: the assistant's role."""
        return self.delta({"role": "assistant", "content": "", "refusal": None})

    def ending_chunks(self, result: ChatResult) -> list[dict[str, Any]]:
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

    def chunks(self, result: ChatResult) -> list[dict[str, Any]]:
        """Every chunk of ``result`` sent whole, in order (no ``[DONE]``)."""
        head = [self.opening_chunk()] + ([self.delta({"content": result.text})]
                                         if result.text else [])
        return head + self.ending_chunks(result)

    def opening(self) -> bytes:
        return event(self.opening_chunk())

    def text(self, piece: str) -> bytes:
        return event(self.delta({"content": piece}))

    def ending(self, result: ChatResult) -> bytes:
        return b"".join(event(c) for c in self.ending_chunks(result)) + DONE

    def whole(self, result: ChatResult) -> bytes:
        return b"".join(event(c) for c in self.chunks(result)) + DONE

    def error(self, problem: Problem) -> bytes:
        return event({"error": openai_error(problem)})


def completion_chunks(result: ChatResult, *, include_usage: bool,
                      created: int | None = None) -> list[dict[str, Any]]:
    """The chunks a streaming OpenAI client reads for ``result``, in order (no ``[DONE]``)."""
    return Chunks(result.request_id, result.model, include_usage=include_usage,
                  created=created).chunks(result)
