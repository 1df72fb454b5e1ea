"""What a door's wire format provides: parse a body, render an answer, its errors and events.

The pipeline (``queues/http/pipeline.py``) is the same for every door; a wire format only
translates. Adding a door is one module pair: ``<format>.py`` reads its bodies into ChatRequest
fields, ``<format>_render.py`` writes ChatResults, errors and stream events back.

A door with state of its own (the Responses door's stored responses) may also have
``async prepare(door, parsed, key)`` (before the request is submitted) and ``async
finish(door, parsed, result) -> body`` (instead of ``render``), and its encoder ``async
settle(result)`` (awaited before its last events); the pipeline calls them when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import JSONResponse

from models.db.api_keys import KeyInfo
from models.domain.result import ChatResult
from queues.http.errors import Problem


@dataclass
class Parsed:
    """A body read into ChatRequest fields, with where each came from (for a 400's param)."""

    data: dict[str, Any]
    origin: dict[str, str]
    stream: bool = False
    #: Options of the answer's shape only (OpenAI's ``stream_options.include_usage``).
    options: dict[str, Any] = field(default_factory=dict)


class Encoder(Protocol):
    """One streamed answer's server-sent events, in a wire format."""

    def opening(self) -> bytes:
        """What comes before the first piece of text."""
        ...

    def text(self, piece: str) -> bytes:
        """A piece of the answer's text."""
        ...

    def ending(self, result: ChatResult) -> bytes:
        """After the text: tool calls, the finish reason, usage and the end of the stream."""
        ...

    def whole(self, result: ChatResult) -> bytes:
        """The events of an answer the door holds whole (a cache hit, a self-hosted answer)."""
        ...

    def error(self, problem: Problem) -> bytes:
        """The event that ends a stream which failed after its first byte."""
        ...


class Wire(Protocol):
    """A door's wire format."""

    #: Short name, kept on async jobs so a poll answers in the format that created them.
    name: str

    def parse(self, body: dict[str, Any], headers: Any, key: KeyInfo) -> Parsed:
        """ChatRequest fields for ``body``; a ValidationError names the door's parameter."""
        ...

    def render(self, result: ChatResult) -> dict[str, Any]:
        """The answer's body."""
        ...

    def encoder(self, request_id: str, model: str, parsed: Parsed) -> Encoder:
        """The events of one streamed answer."""
        ...

    def error(self, problem: Problem) -> JSONResponse:
        """An error response in this format."""
        ...
