"""A streamed answer whose result comes in between two reads of the worker's stream: what the
last read finds (a thinking block's signature, the text's last pieces) is relayed in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from models.domain.result import ChatResult, Route
from models.domain.thinking import ThinkingBlock
from models.domain.usage import Usage
from queues.http.flight import Flight
from queues.http.relay import Relay
from queues.http.waiter import Watch
from queues.http.wire.anthropic_messages_render import Events

ROUTE = Route(tier="flagship", model="claude-sonnet-4-5", provider="anthropic", backend="api",
              lane="interactive", reason="test")


class Reader:
    """The worker's stream: thinking, then (once the result is in) its signature and text."""

    def __init__(self, watch: Watch, result: ChatResult) -> None:
        self.watch, self.result, self.reads = watch, result, 0

    async def read_parts(self, task_id: str, after: str, block_ms: int | None
                         ) -> tuple[list[tuple[str, str]], str, bool]:
        self.reads += 1
        if self.reads == 1:
            # The result lands right after this read: the relay stops waiting for pieces.
            self.watch.future.set_result(self.result)
            return [("thinking", "Let me price it.")], "1-0", False
        return [("signature", "sig-1"), ("text", "It costs "), ("text", "$4.")], "2-0", True


class Waiter:
    async def wait(self, watch: Watch, timeout: float) -> ChatResult:
        return await watch.future


def _events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[len(b"data: "):]) for line in body.split(b"\n")
            if line.startswith(b"data: ")]


def test_a_signature_read_after_the_result_came_is_still_relayed() -> None:
    result = ChatResult(request_id="r1", text="It costs $4.", provider="anthropic",
                        model=ROUTE.model, route=ROUTE, usage=Usage(input_uncached=5, output=9),
                        thinking=(ThinkingBlock(thinking="Let me price it.", signature="sig-1"),))

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        watch = Watch(future=loop.create_future(), request_id="r1")
        relay = Relay(Reader(watch, result), Waiter(), "t1", watch, 5.0,  # type: ignore[arg-type]
                      Flight(None))
        encoder = Events("r1", ROUTE.model)
        first = await relay._piece()
        assert first is not None
        return b"".join([chunk async for chunk in relay._events(first, encoder)])

    deltas = [e["delta"] for e in _events(asyncio.run(run()))
              if e["type"] == "content_block_delta"]
    # Dropped before: the client's thinking block came without its signature.
    assert {"type": "signature_delta", "signature": "sig-1"} in deltas
    assert "".join(d.get("text", "") for d in deltas) == "It costs $4."  # once, in order
    kinds = [d["type"] for d in deltas]
    assert kinds.index("signature_delta") < kinds.index("text_delta")
