"""ChatResults as OpenAI ``response`` objects and Responses streaming events.

The semantic events (``response.created``, ``response.output_item.added``, ...,
``response.completed``) carry a ``sequence_number`` from 0, as OpenAI's do. The stand-in
provider replays its own answers through :func:`item_events` too, so both speak one shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from models.domain.result import ChatResult
from models.domain.usage import Usage
from queues.http.errors import Problem, openai_error
from queues.http.wire.openai_responses_items import output_items, text_part

#: Called with the finished response body before ``response.completed`` goes out (the
#: door stores it there, so a chained request right after the stream finds it); returns
#: the body to send.
Keep = Callable[[ChatResult, dict[str, Any]], Awaitable[dict[str, Any]]]


#: Request fields the door keeps beside the echo that a response object does not show.
_UNSHOWN = frozenset({"include", "store_asked"})


def usage_body(u: Usage) -> dict[str, Any]:
    """Responses usage: ``input_tokens`` INCLUDES ``cached_tokens``, ``output_tokens`` the
    reasoning tokens."""
    return {"input_tokens": u.input_total,
            "input_tokens_details": {"cached_tokens": u.cache_read,
                                     "cache_write_tokens": u.cache_write_5m + u.cache_write_1h},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": u.reasoning},
            "total_tokens": u.input_total + u.output}


def response_body(result: ChatResult, echo: dict[str, Any], *, text_first: bool = False,
                  created: int | None = None) -> dict[str, Any]:
    """The ``response`` object for ``result``, repeating the request fields in ``echo``."""
    encrypted = "reasoning.encrypted_content" in echo.get("include", ())
    return {**shell(result.request_id, result.model, echo, created), "status": status_of(result),
            "incomplete_details": ({"reason": "max_output_tokens"}
                                   if result.finish_reason == "length" else None),
            "output": output_items(result, encrypted=encrypted, text_first=text_first),
            "usage": usage_body(result.usage)}


def status_of(result: ChatResult) -> str:
    """``incomplete`` when the answer hit ``max_output_tokens``."""
    return "incomplete" if result.finish_reason == "length" else "completed"


def shell(request_id: str, model: str, echo: dict[str, Any],
          created: int | None = None) -> dict[str, Any]:
    """A response object before any output (``response.created``)."""
    body = {"id": f"resp_{request_id}", "object": "response",
            "created_at": created or int(time.time()), "status": "in_progress", "error": None,
            "incomplete_details": None, "model": model, "output": [], "usage": None,
            "background": False}
    body.update({k: v for k, v in echo.items() if k not in _UNSHOWN})
    body.setdefault("parallel_tool_calls", True)
    body.setdefault("tool_choice", "auto")
    body.setdefault("tools", [])
    body.setdefault("store", False)
    return body


def sse(data: dict[str, Any]) -> bytes:
    """One named server-sent event."""
    return (b"event: " + data["type"].encode() + b"\ndata: "
            + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


class Sequence:
    """Numbers a stream's events from 0."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.n}
        self.n += 1
        return sse(data)


def text_opening(seq: Sequence, index: int, item_id: str) -> bytes:
    """A message item and its text part, before any text."""
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
            "content": []}
    return (seq("response.output_item.added", output_index=index, item=item)
            + seq("response.content_part.added", item_id=item_id, output_index=index,
                  content_index=0, part=text_part("")))


def text_delta(seq: Sequence, index: int, item_id: str, piece: str) -> bytes:
    """One piece of a message's text."""
    return seq("response.output_text.delta", item_id=item_id, output_index=index,
               content_index=0, delta=piece, logprobs=[])


def text_closing(seq: Sequence, index: int, item: dict[str, Any]) -> bytes:
    """The end of a message item: its whole text, part and item."""
    part = item["content"][0]
    return (seq("response.output_text.done", item_id=item["id"], output_index=index,
                content_index=0, text=part["text"], logprobs=[])
            + seq("response.content_part.done", item_id=item["id"], output_index=index,
                  content_index=0, part=part)
            + seq("response.output_item.done", output_index=index, item=item))


def item_events(seq: Sequence, index: int, item: dict[str, Any],
                pieces: Callable[[str], list[str]] = lambda t: [t] if t else []
                ) -> Iterator[tuple[bytes, str]]:
    """``(event bytes, text it carries)`` for one whole output item, in OpenAI's order."""
    if item["type"] == "message":
        yield text_opening(seq, index, item["id"]), ""
        for piece in pieces(item["content"][0]["text"]):
            yield text_delta(seq, index, item["id"], piece), piece
        yield text_closing(seq, index, item), ""
    elif item["type"] == "function_call":
        yield seq("response.output_item.added", output_index=index,
                  item={**item, "arguments": "", "status": "in_progress"}), ""
        yield (seq("response.function_call_arguments.delta", item_id=item["id"],
                   output_index=index, delta=item["arguments"])
               + seq("response.function_call_arguments.done", item_id=item["id"],
                     output_index=index, name=item["name"], arguments=item["arguments"])
               + seq("response.output_item.done", output_index=index, item=item)), ""
    else:  # reasoning: announced, then whole
        yield (seq("response.output_item.added", output_index=index,
                   item={**item, "summary": [], "encrypted_content": None})
               + seq("response.output_item.done", output_index=index, item=item)), ""


def final_kind(body: dict[str, Any]) -> str:
    """``response.completed``, or ``response.incomplete`` for an answer cut short (as OpenAI
    ends such a stream)."""
    return "response.incomplete" if body["status"] == "incomplete" else "response.completed"


def opening_events(seq: Sequence, response: dict[str, Any]) -> bytes:
    """``response.created`` and ``response.in_progress``."""
    return (seq("response.created", response=response)
            + seq("response.in_progress", response=response))


def error_event(seq: Sequence, problem: Problem) -> bytes:
    """The ``error`` event that ends a stream which failed after its first byte."""
    err = openai_error(problem)
    return seq("error", code=err.get("code") or err.get("type"), message=err["message"],
               param=err.get("param"))


class Events:
    """One streamed response (an :class:`~queues.http.wire.base.Encoder`): relayed text goes
    into a message item at output index 0; reasoning items and function calls follow once the
    result is in; ``response.completed`` carries usage."""

    def __init__(self, request_id: str, model: str, echo: dict[str, Any],
                 keep: Keep | None = None) -> None:
        self.request_id, self.model, self.echo, self.keep = request_id, model, echo, keep
        self.seq = Sequence()
        self.created = int(time.time())
        self.item_id = f"msg_{request_id}"
        self.opened = False  # text went out before the result: the message comes first
        self.body: dict[str, Any] | None = None

    def _shell(self, model: str) -> dict[str, Any]:
        return shell(self.request_id, model, self.echo, self.created)

    def opening(self) -> bytes:
        self.opened = True
        return opening_events(self.seq, self._shell(self.model)) \
            + text_opening(self.seq, 0, self.item_id)

    def text(self, piece: str) -> bytes:
        return text_delta(self.seq, 0, self.item_id, piece)

    async def settle(self, result: ChatResult) -> None:
        """Build the final response body (kept first, when the door keeps responses): called
        by the relay before :meth:`ending` or :meth:`whole`."""
        body = response_body(result, self.echo, text_first=self.opened, created=self.created)
        self.body = await self.keep(result, body) if self.keep is not None else body

    def _final(self, result: ChatResult) -> dict[str, Any]:
        if self.body is None:
            self.body = response_body(result, self.echo, text_first=self.opened,
                                      created=self.created)
        return self.body

    def ending(self, result: ChatResult) -> bytes:
        body = self._final(result)
        out = text_closing(self.seq, 0, body["output"][0])
        for i, item in enumerate(body["output"][1:], start=1):
            out += b"".join(e for e, _ in item_events(self.seq, i, item))
        return out + self.seq(final_kind(body), response=body)

    def whole(self, result: ChatResult) -> bytes:
        body = self._final(result)
        out = opening_events(self.seq, self._shell(result.model))
        for i, item in enumerate(body["output"]):
            out += b"".join(e for e, _ in item_events(self.seq, i, item))
        return out + self.seq(final_kind(body), response=body)

    def error(self, problem: Problem) -> bytes:
        return error_event(self.seq, problem)
