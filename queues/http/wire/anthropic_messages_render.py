"""ChatResults as Anthropic ``message`` bodies and streaming events; errors in its shape."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from models.domain.result import ChatResult
from models.domain.usage import Usage
from queues.http.errors import Problem
from queues.http.rate_headers import anthropic_headers

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
#: Anthropic's error types by status; its SDK raises the matching class and retries by status.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "invalid_request_error", 410: "not_found_error",
          413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
          529: "overloaded_error"}


def usage_body(u: Usage) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` EXCLUDES both cache buckets."""
    return {"input_tokens": u.input_uncached, "output_tokens": u.output,
            "cache_creation_input_tokens": u.cache_write_5m + u.cache_write_1h,
            "cache_read_input_tokens": u.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": u.cache_write_5m,
                               "ephemeral_1h_input_tokens": u.cache_write_1h}}


def content_blocks(result: ChatResult) -> list[dict[str, Any]]:
    """The answer's text and tool calls as content blocks."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": result.text}] if result.text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
               for c in result.tool_calls]
    return blocks


def stop_reason(result: ChatResult) -> str:
    """Anthropic's stop reason for our finish reason."""
    return _STOP.get(result.finish_reason, "end_turn")


def message_body(result: ChatResult) -> dict[str, Any]:
    """The ``message`` object for ``result``."""
    return {"id": f"msg_{result.request_id}", "type": "message", "role": "assistant",
            "model": result.model, "content": content_blocks(result),
            "stop_reason": stop_reason(result), "stop_sequence": None,
            "usage": usage_body(result.usage)}


def error_body(problem: Problem) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message", ...}}``; ours add param and code."""
    kind = _TYPES.get(problem.status, "api_error")
    error: dict[str, Any] = {"type": kind, "message": problem.message}
    if problem.param:
        error["param"] = problem.param
    if problem.code:
        error["code"] = problem.code
    error.update(problem.extra)
    return {"type": "error", "error": error}


def anthropic_status(problem: Problem) -> Problem:
    """Shedding is Anthropic's 529 ``overloaded_error``, which its SDK retries with backoff."""
    if problem.code == "overloaded":
        return Problem(529, problem.message, problem.param, problem.code, problem.extra,
                       True, problem.retry_after, problem.headers)
    return problem


def error_response(problem: Problem) -> JSONResponse:
    """``problem`` as an Anthropic-shaped error response."""
    problem = anthropic_status(problem)
    return JSONResponse(error_body(problem), status_code=problem.status,
                        headers={**problem.response_headers(),
                                 **anthropic_headers(problem.rate)})


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One named server-sent event."""
    return (b"event: " + kind.encode() + b"\ndata: "
            + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


class Events:
    """The event sequence of one streamed message (an :class:`~queues.http.wire.base.Encoder`):
    ``message_start``, text in block 0 as ``text_delta``s, each tool call as a ``tool_use``
    block with one ``input_json_delta``, ``message_delta`` with the stop reason and usage,
    ``message_stop``; ``ping`` after the start, as Anthropic sends it."""

    def __init__(self, request_id: str, model: str) -> None:
        self.request_id, self.model = request_id, model

    def _start(self, usage: Usage) -> bytes:
        message = {"id": f"msg_{self.request_id}", "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": usage_body(usage)}
        return sse("message_start", {"type": "message_start", "message": message})

    @staticmethod
    def _text_block() -> bytes:
        return sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})

    @staticmethod
    def _ping() -> bytes:
        return sse("ping", {"type": "ping"})

    def opening(self) -> bytes:
        # Usage is known only at the end: message_delta carries all of it (the SDK takes it).
        return self._start(Usage()) + self._text_block() + self._ping()

    def text(self, piece: str) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": piece}})

    def _tail(self, result: ChatResult, first: int) -> bytes:
        out = b""
        for i, call in enumerate(result.tool_calls, start=first):
            out += sse("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name,
                                  "input": {}}})
            out += sse("content_block_delta", {
                "type": "content_block_delta", "index": i,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments}})
            out += sse("content_block_stop", {"type": "content_block_stop", "index": i})
        out += sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason(result),
                                               "stop_sequence": None},
                                     "usage": usage_body(result.usage)})
        return out + sse("message_stop", {"type": "message_stop"})

    def ending(self, result: ChatResult) -> bytes:
        stop = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        return stop + self._tail(result, 1)

    def whole(self, result: ChatResult) -> bytes:
        self.model = result.model
        out = self._start(result.usage)
        if result.text:
            out += self._text_block() + self._ping() + self.text(result.text)
            out += sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            return out + self._tail(result, 1)
        return out + self._ping() + self._tail(result, 0)

    def error(self, problem: Problem) -> bytes:
        return sse("error", error_body(anthropic_status(problem)))
