"""The async lane's slot gate: at most N requests in the engine, the rest sent as slots free."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from models.domain.errors import EngineDead
from models.domain.settings import GpuSettings
from workers.gpu.engine_io import EngineRequest
from workers.gpu.slot_gate import SlotGate


class Engine:
    """A sink whose futures the test resolves by hand."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.futures: dict[str, Future[Any]] = {}

    def __call__(self, requests: Any) -> list[Future[Any]]:
        out: list[Future[Any]] = []
        for r in requests:
            self.sent.append(r.request_id)
            self.futures[r.request_id] = Future()
            out.append(self.futures[r.request_id])
        return out

    def finish(self, rid: str) -> None:
        self.futures[rid].set_result(rid)


def reqs(*ids: str) -> list[EngineRequest]:
    return [EngineRequest(prompt="p", request_id=i) for i in ids]


def test_only_the_free_slots_go_to_the_engine_and_the_rest_follow_in_order() -> None:
    engine = Engine()
    gate = SlotGate(engine, slots=2)
    futures = gate(reqs("a", "b", "c", "d"))
    assert engine.sent == ["a", "b"] and gate.waiting() == 2 and gate.in_engine() == 2
    engine.finish("b")
    assert futures[1].result(timeout=1) == "b"
    assert engine.sent == ["a", "b", "c"] and gate.in_engine() == 2
    engine.finish("a")
    engine.finish("c")
    assert engine.sent == ["a", "b", "c", "d"]
    engine.finish("d")
    assert [f.result(timeout=1) for f in futures] == ["a", "b", "c", "d"]
    assert gate.in_engine() == 0 and gate.waiting() == 0


def test_a_waiter_cancelled_before_its_slot_is_never_sent() -> None:
    engine = Engine()
    gate = SlotGate(engine, slots=1)
    futures = gate(reqs("a", "b", "c"))
    futures[1].cancel()
    engine.finish("a")
    assert engine.sent == ["a", "c"]


def test_cancelling_a_running_request_cancels_it_in_the_engine_and_frees_its_slot() -> None:
    engine = Engine()
    gate = SlotGate(engine, slots=1)
    futures = gate(reqs("a", "b"))
    futures[0].cancel()
    assert engine.futures["a"].cancelled()
    assert engine.sent == ["a", "b"]


def test_an_engine_that_refuses_fails_the_requests_and_keeps_no_slot() -> None:
    calls = []

    def dead(requests: Any) -> list[Any]:
        calls.append(len(requests))
        raise EngineDead("gone", provider="vllm")

    gate = SlotGate(dead, slots=2)
    futures = gate(reqs("a", "b", "c"))
    for f in futures:
        with pytest.raises(EngineDead):
            f.result(timeout=1)
    assert calls == [2, 1]  # the third was tried as the first two's slots came back
    assert gate.in_engine() == 0 and gate.waiting() == 0


def test_the_async_lane_leaves_a_quarter_of_the_engine_to_interactive_requests() -> None:
    assert GpuSettings(max_num_seqs=64).async_slots == 48
    assert GpuSettings(max_num_seqs=64, interactive_reserve=0).async_slots == 64
    assert GpuSettings(max_num_seqs=2, interactive_reserve=0.9).async_slots == 1
    with pytest.raises(ValueError):
        SlotGate(Engine(), slots=0)
