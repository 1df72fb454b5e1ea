"""A streamed answer relayed as the worker generates it: its pieces first, then the result.

Every door streams through here; only the encoder (its wire format's events) differs. The
response starts with the first piece, so an error before it (a refusal, a provider's 4xx) is
still an ordinary HTTP error. After it, an error ends the stream with the format's ``error``
event, as OpenAI's and Anthropic's do. The task's result stays the source of truth: what the
stream missed (Redis away, pieces written after the last read) is sent from it, and the
finish reason, tool calls and usage come from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from models.domain.errors import SluiceError
from models.domain.result import ChatResult
from queues.http.errors import problem_of
from queues.http.flight import Flight
from queues.http.stream import settle, settled_response
from queues.http.wire.base import Encoder
from queues.http.waiter import ResultWaiter, Watch
from queues.token_stream import TEXT, TokenReader

log = logging.getLogger(__name__)
#: How long one read waits for a piece before looking at the result again. The worker's end
#: mark ends the reads at once after the last piece; before the first, this bounds the delay
#: of an answer that comes whole (a self-hosted model, an error).
BLOCK_MS = 100


class FlightResponse(StreamingResponse):
    """Ends the request's flight however the response ends: a client that hung up before the
    first byte cancels the body before its generator ever runs its ``finally``."""

    def __init__(self, content: AsyncIterator[bytes], flight: Flight, **kw: object) -> None:
        super().__init__(content, **kw)  # type: ignore[arg-type]
        self.flight = flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.flight.end()


class Relay:
    """One streamed answer: ``start`` it once the request is submitted and watched."""

    def __init__(self, reader: TokenReader, waiter: ResultWaiter, task_id: str, watch: Watch,
                 timeout: float, flight: Flight) -> None:
        self.reader, self.waiter, self.task_id = reader, waiter, task_id
        self.watch, self.flight = watch, flight
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + timeout
        self._after = "0"
        self._ended = False  # the end mark came, or the stream cannot be read

    async def start(self, request_id: str, encoder: Encoder) -> Response:
        """Wait for the first piece (or the result) and answer from there; the flight ends
        when the answer does."""
        try:
            first = await self._piece()
            if first is None:  # the result came first: an answer sent whole, or an HTTP error
                try:
                    result = await self.flight.wait(self.waiter, self.watch, self._left())
                finally:
                    self.flight.end()
                return await settled_response(result, encoder)
        except BaseException:
            self.flight.end()
            raise
        return FlightResponse(self._events(first, encoder), self.flight,
                              media_type="text/event-stream",
                              headers={"x-sluice-request-id": request_id,
                                       "x-sluice-cache": "miss", "cache-control": "no-cache"})

    def _left(self) -> float:
        return max(self.deadline - self.loop.time(), 0.01)

    async def _read(self, block_ms: int | None) -> list[tuple[str, str]]:
        """What arrived since the last read, as (kind, piece) (none once the stream ended or
        failed)."""
        if self._ended:
            return []
        try:
            parts, self._after, ended = await self.reader.read_parts(self.task_id, self._after,
                                                                     block_ms)
        except Exception as exc:  # noqa: BLE001 - the result still carries the whole answer
            log.warning("reading the stream of %s failed, the rest comes with the result: %s",
                        self.task_id, exc)
            parts, ended = [], True
        self._ended = ended
        return parts

    async def _piece(self) -> list[tuple[str, str]] | None:
        """The next pieces the worker wrote, or None once it is done (or the result is in,
        or time is up)."""
        while not self._ended and not self.watch.future.done() \
                and self.loop.time() < self.deadline:
            parts = await self._read(BLOCK_MS)
            if parts:
                return parts
        return None

    @staticmethod
    def _encode(encoder: Encoder, parts: list[tuple[str, str]], sent: list[str]) -> bytes:
        """Text to ``encoder.text``; thinking and the like to ``encoder.part`` where the wire
        format has such blocks (Anthropic's), left out where it has none."""
        out = b""
        other = getattr(encoder, "part", None)
        for kind, piece in parts:
            if kind == TEXT:
                sent.append(piece)
                out += encoder.text(piece)
            elif other is not None:
                out += other(kind, piece)
        return out

    async def _events(self, first: list[tuple[str, str]], encoder: Encoder
                      ) -> AsyncIterator[bytes]:
        sent: list[str] = []
        yield encoder.opening()
        yield self._encode(encoder, first, sent)
        while (parts := await self._piece()) is not None:
            yield self._encode(encoder, parts, sent)
        try:
            result: ChatResult = await self.flight.wait(self.waiter, self.watch, self._left())
        except SluiceError as err:
            yield encoder.error(problem_of(err))
            return
        # Written after the last read (the result can come in between the reads of one
        # flush): relayed in order, a thinking block's signature too, which the result's text
        # does not carry (dropped, the client's next turn sent the block back unsigned).
        late = await self._read(None)
        streamed = "".join(sent) + "".join(p for k, p in late if k == TEXT)
        if result.text.startswith(streamed):
            yield self._encode(encoder, late, sent)
            tail = result.text[len("".join(sent)):]  # anything the stream missed
            if tail:
                yield encoder.text(tail)
        else:
            log.warning("streamed text of %s differs from its result (a redelivered run "
                        "streamed again?); the client keeps what it got", self.task_id)
        await settle(encoder, result)
        yield encoder.ending(result)
