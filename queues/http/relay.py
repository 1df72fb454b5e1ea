"""``stream=true`` relayed as the worker generates it: its pieces first, then the result.

The response starts with the first piece, so an error before it (a refusal, a provider's 4xx)
is still an ordinary HTTP error. After it, an error ends the stream with an ``error`` event,
as OpenAI's does. The task's result stays the source of truth: what the stream missed is sent
from it, and the finish reason and usage come from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from models.domain.errors import DeadlineExceeded, SluiceError
from models.domain.result import ChatResult
from queues.http.errors import sluice_error_response
from queues.http.flight import Flight
from queues.http.stream import DONE, Chunks, event, stream_response
from queues.http.waiter import ResultWaiter, Watch
from queues.token_stream import TokenReader

log = logging.getLogger(__name__)
#: How long one read waits for a piece before looking at the result again.
BLOCK_MS = 25


class Relay:
    """One streamed answer: ``start`` it once the request is submitted and watched."""

    def __init__(self, reader: TokenReader, waiter: ResultWaiter, task_id: str, watch: Watch,
                 timeout: float, flight: Flight) -> None:
        self.reader, self.waiter, self.task_id = reader, waiter, task_id
        self.watch, self.flight = watch, flight
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + timeout
        self._after = "0"

    async def start(self, request_id: str, model: str, include_usage: bool) -> Response:
        """Wait for the first piece (or the result) and answer from there; ends the flight
        when the answer ends."""
        try:
            first = await self._piece()
        except BaseException:
            self.flight.end()
            raise
        if first is None:  # the result came first: an answer sent whole, or an HTTP error
            try:
                return stream_response(await self._result(), include_usage=include_usage)
            finally:
                self.flight.end()
        chunks = Chunks(request_id, model, include_usage=include_usage)
        return StreamingResponse(self._events(first, chunks), media_type="text/event-stream",
                                 headers={"x-sluice-request-id": request_id,
                                          "x-sluice-cache": "miss", "cache-control": "no-cache"})

    async def _piece(self) -> str | None:
        """The next text the worker wrote, or None once the result is in (or time is up)."""
        while not self.watch.future.done() and self.loop.time() < self.deadline:
            text, self._after = await self.reader.read(self.task_id, self._after, BLOCK_MS)
            if text:
                return text
        return None

    async def _result(self) -> ChatResult:
        try:
            result = await self.waiter.wait(self.watch, max(self.deadline - self.loop.time(),
                                                            0.01))
        except DeadlineExceeded as err:
            self.flight.dropped(err)
            raise
        self.flight.answered(result)
        return result

    async def _events(self, first: str, chunks: Chunks) -> AsyncIterator[bytes]:
        sent = [first]
        try:
            yield event(chunks.opening())
            yield event(chunks.text(first))
            while (piece := await self._piece()) is not None:
                sent.append(piece)
                yield event(chunks.text(piece))
            try:
                result = await self._result()
            except SluiceError as err:
                body = json.loads(sluice_error_response(err).body)
                yield event(body)  # {"error": {...}}: the SDKs raise it
                return
            rest, self._after = await self.reader.read(self.task_id, self._after, None)
            streamed = "".join(sent) + rest
            if result.text.startswith(streamed):
                # Pieces written after the last read, and any the stream missed.
                tail = rest + result.text[len(streamed):]
                if tail:
                    yield event(chunks.text(tail))
            else:
                log.warning("streamed text of %s differs from its result (a redelivered run "
                            "streamed again?); the client keeps what it got", self.task_id)
            for chunk in chunks.ending(result):
                yield event(chunk)
            yield DONE
        finally:
            self.flight.end()
