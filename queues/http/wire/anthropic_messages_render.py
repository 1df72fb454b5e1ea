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
    """The answer's thinking, text and tool calls as content blocks, in Anthropic's order."""
    blocks = [b.to_anthropic() for b in result.thinking]
    blocks += [{"type": "text", "text": result.text}] if result.text else []
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
               for c in result.tool_calls]
    return blocks


def stop_reason(result: ChatResult) -> str:
    """Anthropic's stop reason for our finish reason (a matched stop sequence says so)."""
    if result.stop_sequence is not None and result.finish_reason == "stop":
        return "stop_sequence"
    return _STOP.get(result.finish_reason, "end_turn")


def stop_sequence(result: ChatResult) -> str | None:
    """The stop sequence that ended the answer, when one did."""
    return result.stop_sequence if stop_reason(result) == "stop_sequence" else None


def message_body(result: ChatResult) -> dict[str, Any]:
    """The ``message`` object for ``result``."""
    return {"id": f"msg_{result.request_id}", "type": "message", "role": "assistant",
            "model": result.model, "content": content_blocks(result),
            "stop_reason": stop_reason(result), "stop_sequence": stop_sequence(result),
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
    ``message_start``, ``ping`` after the first block starts (as Anthropic sends it), thinking
    blocks as ``thinking_delta``s and a ``signature_delta``, redacted thinking whole, the text
    as ``text_delta``s, each tool call as a ``tool_use`` block with one ``input_json_delta``,
    ``message_delta`` with the stop reason and usage, ``message_stop``. Blocks are opened as
    their first piece comes, each at the next index."""

    def __init__(self, request_id: str, model: str) -> None:
        self.request_id, self.model = request_id, model
        self._index = -1  # the open block's index (-1: none yet)
        self._open: str | None = None  # its type, while open
        self._pinged = False
        self._thought = False  # a thinking part was streamed

    def _start(self, usage: Usage) -> bytes:
        message = {"id": f"msg_{self.request_id}", "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": usage_body(usage)}
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _block(self, block: dict[str, Any]) -> bytes:
        """Close the open block and start ``block`` at the next index."""
        out = self._close()
        self._index += 1
        self._open = block["type"]
        out += sse("content_block_start", {"type": "content_block_start", "index": self._index,
                                           "content_block": block})
        if not self._pinged:
            self._pinged = True
            out += sse("ping", {"type": "ping"})
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                           "delta": delta})

    def opening(self) -> bytes:
        # Usage is known only at the end: message_delta carries all of it (the SDK takes it).
        return self._start(Usage())

    def text(self, piece: str) -> bytes:
        out = b"" if self._open == "text" else self._block({"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": piece})

    def part(self, kind: str, piece: str) -> bytes:
        """A streamed part other than text: ``thinking``, ``signature``, ``redacted_thinking``."""
        self._thought = True
        if kind == "redacted_thinking":
            return self._block({"type": "redacted_thinking", "data": piece}) + self._close()
        if kind == "signature":
            if self._open != "thinking":
                return b""
            return self._delta({"type": "signature_delta", "signature": piece}) + self._close()
        out = b"" if self._open == "thinking" else self._block(
            {"type": "thinking", "thinking": "", "signature": ""})
        return out + self._delta({"type": "thinking_delta", "thinking": piece})

    def _thinking(self, result: ChatResult) -> bytes:
        out = b""
        for block in result.thinking:
            if block.type == "redacted_thinking":
                out += self.part("redacted_thinking", block.data)
            else:
                out += self.part("thinking", block.thinking) if block.thinking else \
                    self._block({"type": "thinking", "thinking": "", "signature": ""})
                out += self.part("signature", block.signature)
        return out

    def ending(self, result: ChatResult) -> bytes:
        out = b""
        if result.thinking and not self._thought:
            # The stream carried none of it (a worker that streams no thinking): after the
            # text, at their own indexes, rather than lost.
            out += self._thinking(result)
        out += self._close()
        for call in result.tool_calls:
            out += self._block({"type": "tool_use", "id": call.id, "name": call.name,
                                "input": {}})
            out += self._delta({"type": "input_json_delta", "partial_json": call.arguments})
            out += self._close()
        out += sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason(result),
                                               "stop_sequence": stop_sequence(result)},
                                     "usage": usage_body(result.usage)})
        return out + sse("message_stop", {"type": "message_stop"})

    def whole(self, result: ChatResult) -> bytes:
        self.model = result.model
        out = self._start(result.usage) + self._thinking(result)
        if result.text:
            out += self.text(result.text)
        if self._index < 0 and not result.tool_calls:
            out += sse("ping", {"type": "ping"})
        return out + self.ending(result)

    def error(self, problem: Problem) -> bytes:
        return sse("error", error_body(anthropic_status(problem)))
