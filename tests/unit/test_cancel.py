"""Cancel marks: who looks them up, and what an unreadable mark means (run, do not drop)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis

from models.domain.errors import BrokerError, ConfigError, ValidationError
from models.domain.request import parse_request
from models.domain.result import ChatResult, Route
from models.domain.settings import load_settings
from queues.cancel import MIN_TTL_S, CancelMarks, cancel_key
from queues.envelope import task_id_for
from queues.handle import ReadyHandle
from queues.producer import Gateway
from workers.service import _cancelled


class FakeRedis:
    def __init__(self, fail: bool = False) -> None:
        self.keys: dict[str, tuple[bytes, int]] = {}
        self.reads = 0
        self.fail = fail

    def set(self, key: str, value: bytes, ex: int, nx: bool = False) -> bool | None:
        self.reads += 1
        if self.fail:
            raise ConnectionError("redis is away")
        if nx and key in self.keys:
            return None
        self.keys[key] = (value, ex)
        return True

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        found = self.keys.get(key)
        return None if found is None else found[0]


def request(lane: str, rid: str = "job-1") -> Any:
    return parse_request({"request_id": rid, "team": "t", "feature": "f", "model": "cheap",
                          "lane": lane,
                          "messages": [{"role": "user", "content": "hi"}]})


def test_a_mark_cancels_its_async_request_only() -> None:
    client = FakeRedis()
    marks = CancelMarks(client, "p:", ttl_s=3600)
    marks.mark(task_id_for(request("async")))
    # It outlives any queue wait: an async request may wait with no deadline at all.
    assert client.keys[cancel_key("p:", task_id_for(request("async")))][1] == MIN_TTL_S
    rt = SimpleNamespace(cancels=marks)
    assert _cancelled(rt, request("async"))  # type: ignore[arg-type]
    assert not _cancelled(rt, request("async", "job-2"))  # type: ignore[arg-type]
    # The mark is scoped to the tenant: the same request id of another team is not cancelled.
    other = request("async").model_copy(update={"team": "someone-else"})
    assert not _cancelled(rt, other)  # type: ignore[arg-type]
    reads = client.reads
    assert not _cancelled(rt, request("interactive"))  # type: ignore[arg-type]
    assert client.reads == reads, "interactive requests cost no lookup"


def test_the_first_of_cancel_and_start_wins_and_the_other_is_told() -> None:
    client = FakeRedis()
    marks = CancelMarks(client, "p:")
    # The worker got there first: the request runs, and a cancel after it is refused.
    assert marks.marked("a~t") is False and marks.state("a~t") == "started"
    assert marks.mark("a~t") is False
    assert marks.marked("a~t") is False  # a redelivery of a started request still runs
    # The cancel got there first: the worker drops it, however often it is delivered.
    assert marks.mark("b~t") is True and marks.mark("b~t") is True
    assert marks.marked("b~t") is True and marks.marked("b~t") is True
    assert marks.state("b~t") == "cancelled" and marks.state("c~t") is None
    # A mark of the previous release (EXISTS-based) still cancels.
    client.keys[cancel_key("p:", "d~t")] = (b"1", 60)
    assert marks.marked("d~t") is True


def test_an_unreadable_mark_runs_the_request_and_no_marks_means_none() -> None:
    rt = SimpleNamespace(cancels=CancelMarks(FakeRedis(fail=True), "", ttl_s=3600))
    assert not _cancelled(rt, request("async"))  # type: ignore[arg-type]
    assert not _cancelled(SimpleNamespace(cancels=None), request("async"))  # type: ignore[arg-type]


def test_the_gateway_cancels_by_task_id_and_says_when_it_cannot() -> None:
    class Handle:
        task_id = "job-1~abc"

    client = FakeRedis()
    gw = Gateway(load_settings({}), cancels=CancelMarks(client, "p:"))
    try:
        assert gw.cancel(Handle()) is True  # type: ignore[arg-type]
        assert cancel_key("p:", "job-1~abc") in client.keys
        route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                      lane="async")
        hit = ReadyHandle(ChatResult(request_id="r", text="x", provider="openai",
                                     model="gpt-4o-mini", route=route))
        with pytest.raises(ValidationError, match="response cache"):
            gw.cancel(hit)
        client.set = lambda *a, **k: (_ for _ in ()).throw(  # type: ignore[method-assign]
            redis.exceptions.ConnectionError("down"))
        with pytest.raises(BrokerError, match="retry"):
            gw.cancel("job-2~abc")
        with pytest.raises(ConfigError, match="Redis broker"):
            Gateway(gw.settings).cancel("job-3~abc")
    finally:
        gw.close()
