"""Streamed answers: the worker's writes (coalesced, first piece at once) and its retry rule."""

from __future__ import annotations

from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.usage import Usage
from queues.token_stream import TTL_S, TokenWriter, token_key
from workers.providers.base import ProviderCall, ProviderReply
from workers.service import _attempt


class FakePipe:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log, self.ops = log, []  # type: ignore[var-annotated]

    def xadd(self, key: str, fields: dict[str, bytes], **kw: Any) -> None:
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
    assert client.writes[-1] == (("xadd", "p:sluice:tokens:t1", " wide world"),)
    writer.close()
    assert len(client.writes) == 2  # nothing left, nothing written


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
