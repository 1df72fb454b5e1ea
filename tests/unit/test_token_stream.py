"""Streamed answers: the worker's writes (coalesced, first piece at once) and its retry rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.usage import Usage
from queues.http.flight import Flight
from queues.http.relay import FlightResponse
from queues.token_stream import TTL_S, TokenWriter, token_key
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.errors import map_sdk_error
from workers.provider_chain import one_attempt as _attempt


class FakePipe:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log, self.ops = log, []  # type: ignore[var-annotated]

    def xadd(self, key: str, fields: dict[str, bytes], **kw: Any) -> None:
        if "end" in fields:
            self.ops.append(("end", key))
        elif "k" in fields:
            self.ops.append(("xadd", key, fields["k"].decode(), fields["t"].decode()))
        else:
            self.ops.append(("xadd", key, fields["t"].decode()))

    def expire(self, key: str, ttl: int) -> None:
        self.ops.append(("expire", key, ttl))

    def execute(self) -> None:
        self.log.append(tuple(self.ops))


class FakeRedis:
    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    def pipeline(self, transaction: bool = True) -> FakePipe:
        return FakePipe(self.writes)


def test_the_first_piece_goes_at_once_and_later_ones_are_coalesced() -> None:
    client = FakeRedis()
    writer = TokenWriter(client, token_key("p:", "t1"), flush_s=3600)
    writer("Hello")
    assert client.writes == [(("xadd", "p:sluice:tokens:t1", "Hello"),
                              ("expire", "p:sluice:tokens:t1", TTL_S))]
    writer(" wide")
    writer(" world")
    assert len(client.writes) == 1  # held until the flush interval or the end
    writer.close()
    # The rest and the end mark in one write; every write renews the key's TTL.
    assert client.writes[-1] == (("xadd", "p:sluice:tokens:t1", " wide world"),
                                 ("end", "p:sluice:tokens:t1"),
                                 ("expire", "p:sluice:tokens:t1", TTL_S))


def test_thinking_is_written_apart_from_the_text_and_signatures_stay_whole() -> None:
    client = FakeRedis()
    writer = TokenWriter(client, token_key("p:", "t2"), flush_s=3600)
    writer.part("thinking", "let ")
    for kind, piece in (("thinking", "me "), ("thinking", "see"), ("signature", "s1"),
                        ("signature", "s2"), ("text", "Hi")):
        writer.part(kind, piece)
    writer(" there")
    writer.close()
    key = "p:sluice:tokens:t2"
    written = [op for ops in client.writes for op in ops if op[0] == "xadd"]
    assert written == [("xadd", key, "thinking", "let "), ("xadd", key, "thinking", "me see"),
                       ("xadd", key, "signature", "s1"), ("xadd", key, "signature", "s2"),
                       ("xadd", key, "Hi there")]


def test_a_reader_returns_each_piece_with_its_kind() -> None:
    from queues.token_stream import TokenReader

    class Stream:
        async def xread(self, streams: dict[str, str], block: int | None) -> Any:
            return [(b"k", [(b"1-0", {b"t": b"hm", b"k": b"thinking"}),
                            (b"2-0", {b"t": b"Hi"}), (b"3-0", {b"end": b"1"})])]

    reader = TokenReader(Stream(), "p:")
    parts, last, ended = asyncio.run(reader.read_parts("t", "0", None))
    assert (parts, last, ended) == ([("thinking", "hm"), ("text", "Hi")], "3-0", True)
    assert asyncio.run(reader.read("t", "0", None)) == ("Hi", "3-0", True)


def test_a_redis_error_switches_the_writer_off_instead_of_failing_the_call() -> None:
    class Down(FakeRedis):
        def pipeline(self, transaction: bool = True) -> FakePipe:
            raise ConnectionError("redis is away")

    writer = TokenWriter(Down(), "k")
    writer("Hello")  # no exception: the text will come with the result
    writer.close()
    assert writer.broken and not writer.sent


CALL = ProviderCall(request=parse_request({"team": "t", "feature": "f", "messages": [
    {"role": "user", "content": "hi"}]}), model=load_catalogue().get("gpt-4o-mini"))


class Flaky:
    """Streams ``pieces`` then fails retryably; answers whole through ``complete``."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces, self.completes = pieces, 0

    def stream(self, call: ProviderCall, on_text: Any) -> ProviderReply:
        for piece in self.pieces:
            on_text(piece)
        raise ProviderRetryable("openai: connection reset", provider="openai", status=None)

    def complete(self, call: ProviderCall) -> ProviderReply:
        self.completes += 1
        return ProviderReply(text="whole", usage=Usage(output=1))


def test_a_stream_that_breaks_before_its_first_piece_may_be_retried() -> None:
    writer = TokenWriter(FakeRedis(), "k")
    with pytest.raises(ProviderRetryable):
        _attempt(Flaky([]), CALL, writer)


def test_a_stream_that_breaks_after_a_piece_is_not_retried() -> None:
    # The caller already holds part of an answer: a retry would write a second one after it.
    client = FakeRedis()
    with pytest.raises(ProviderPermanent, match="not retried"):
        _attempt(Flaky(["Hel"]), CALL, TokenWriter(client, "k"))
    assert client.writes[0][0] == ("xadd", "k", "Hel")


def test_without_a_writer_the_call_is_made_whole() -> None:
    provider = Flaky(["x"])
    assert _attempt(provider, CALL, None).text == "whole" and provider.completes == 1


def test_an_error_event_inside_a_stream_is_retryable_by_its_type_not_its_200() -> None:
    class StreamError(Exception):
        status_code = 200  # anthropic raises an error event with the stream's own status

        def __init__(self, kind: str) -> None:
            super().__init__(kind)
            self.body = {"type": "error", "error": {"type": kind, "message": "x"}}

    assert isinstance(map_sdk_error("anthropic", StreamError("overloaded_error")),
                      ProviderRetryable)
    assert isinstance(map_sdk_error("anthropic", StreamError("invalid_request_error")),
                      ProviderPermanent)


def test_the_flight_ends_when_the_client_hung_up_before_the_first_byte() -> None:
    class Shedder:
        def __init__(self) -> None:
            self.inflight = 0

        def enter(self) -> float:
            self.inflight += 1
            return 0.0

        def exit(self, waited: Any, admitted: float) -> None:
            self.inflight -= 1

    shedder = Shedder()
    flight = Flight(shedder)  # type: ignore[arg-type]
    assert flight.admit is not None
    flight.admit(CALL.request)

    async def never() -> Any:
        await asyncio.sleep(3600)
        yield b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    # uvicorn's httptools protocol says 2.3: Starlette then listens for the disconnect.
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/"}
    asyncio.run(asyncio.wait_for(FlightResponse(never(), flight)(  # type: ignore[arg-type]
        scope, receive, send), 10))
    assert shedder.inflight == 0
