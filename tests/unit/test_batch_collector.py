"""The batch collector over a scripted in-memory Batch API: when it flushes, what callers get."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.usage import Usage
from workers.batch.base import BatchState, Outcome
from workers.batch.collector import BatchCollector
from workers.batch.seam import wants_batch
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.retry import RetryPolicy

CAT = load_catalogue()


class FakeBatchAPI:
    """Ends each batch after ``polls`` polls; answers every call unless told otherwise."""

    name = "openai"

    def __init__(self, polls: int = 2, fail_submit: Exception | None = None,
                 drop: set[str] | None = None, refuse: set[str] | None = None) -> None:
        self.polls = polls
        self.fail_submit = fail_submit
        self.drop = drop or set()
        self.refuse = refuse or set()
        self.batches: dict[str, list[tuple[str, ProviderCall]]] = {}
        self.seen_polls: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.lock = threading.Lock()

    def submit(self, calls: Sequence[tuple[str, ProviderCall]]) -> str:
        if self.fail_submit is not None:
            raise self.fail_submit
        with self.lock:
            batch_id = f"batch_{len(self.batches)}"
            self.batches[batch_id] = list(calls)
        return batch_id

    def poll(self, batch_id: str) -> BatchState:
        self.seen_polls[batch_id] = self.seen_polls.get(batch_id, 0) + 1
        return BatchState(ended=self.seen_polls[batch_id] >= self.polls, status="x")

    def results(self, batch_id: str) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for cid, call in self.batches[batch_id]:
            text = call.request.last_user_text()
            if text in self.drop:
                continue
            if text in self.refuse:
                out[cid] = ProviderPermanent("refused", provider="openai", status=400)
            else:
                out[cid] = ProviderReply(text=f"re: {text}", extra={"batch": True},
                                         usage=Usage(input_uncached=5, output=2))
        return out

    def cancel(self, batch_id: str) -> None:
        self.cancelled.append(batch_id)

    def close(self) -> None:
        pass


def call(text: str, model: str = "gpt-4o-mini") -> ProviderCall:
    request = parse_request({"team": "t", "feature": "f", "lane": "async",
                             "messages": [{"role": "user", "content": text}]})
    return ProviderCall(request=request, model=CAT.get(model))


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[BatchCollector] = []

    def build(api: FakeBatchAPI, **kw: Any) -> BatchCollector:
        opts = {"max_size": 3, "max_wait_s": 0.2, "poll_interval_s": 0.01,
                "retry": RetryPolicy(max_attempts=1)}
        opts.update(kw)
        collector = BatchCollector(lambda name: api, **opts)
        made.append(collector)
        return collector

    yield build
    for c in made:
        c.close()


def test_a_full_group_leaves_at_once_and_each_caller_gets_its_own_answer(make: Any) -> None:
    api = FakeBatchAPI()
    collector = make(api, max_wait_s=30.0)
    started = time.monotonic()
    futures = [collector.submit(call(f"item {i}")) for i in range(3)]
    replies = [f.result(timeout=5) for f in futures]
    assert time.monotonic() - started < 5  # did not wait for the 30 s window
    assert [r.text for r in replies] == ["re: item 0", "re: item 1", "re: item 2"]
    assert len(api.batches) == 1 and api.seen_polls["batch_0"] == 2


def test_a_partial_group_waits_for_the_window_then_leaves(make: Any) -> None:
    api = FakeBatchAPI(polls=1)
    collector = make(api, max_wait_s=0.3)
    started = time.monotonic()
    futures = [collector.submit(call("a")), collector.submit(call("b"))]
    assert [f.result(timeout=5).text for f in futures] == ["re: a", "re: b"]
    assert time.monotonic() - started >= 0.3
    assert [len(v) for v in api.batches.values()] == [2]


def test_models_are_batched_apart_and_overflow_splits(make: Any) -> None:
    api = FakeBatchAPI(polls=1)
    collector = make(api, max_size=2, max_wait_s=0.1)
    futures = [collector.submit(call(f"m{i}", "gpt-4o-mini")) for i in range(3)]
    futures.append(collector.submit(call("big", "gpt-4o")))
    for f in futures:
        f.result(timeout=5)
    models = sorted((calls[0][1].model.name, len(calls)) for calls in api.batches.values())
    assert models == [("gpt-4o", 1), ("gpt-4o-mini", 1), ("gpt-4o-mini", 2)]


def test_outcomes_are_per_request(make: Any) -> None:
    api = FakeBatchAPI(polls=1, drop={"lost"}, refuse={"bad"})
    collector = make(api, max_size=3)
    ok, lost, bad = (collector.submit(call(t)) for t in ("fine", "lost", "bad"))
    assert ok.result(timeout=5).text == "re: fine"
    with pytest.raises(ProviderRetryable, match="without an answer"):
        lost.result(timeout=5)
    with pytest.raises(ProviderPermanent):
        bad.result(timeout=5)


def test_a_refused_submission_fails_every_caller_of_that_batch(make: Any) -> None:
    api = FakeBatchAPI(fail_submit=ProviderRetryable("503", provider="openai", status=503))
    collector = make(api, max_size=2)
    futures = [collector.submit(call("x")), collector.submit(call("y"))]
    for f in futures:
        with pytest.raises(ProviderRetryable):
            f.result(timeout=5)
    assert collector.submitted == []


def test_who_is_batched() -> None:
    settings = load_settings({"SLUICE_BATCH__FEATURES": '["nightly"]'})
    def req(**kw: Any) -> Any:
        base = {"team": "t", "feature": "f", "lane": "async",
                "messages": [{"role": "user", "content": "x"}]}
        return parse_request({**base, **kw})

    assert not wants_batch(req(), "openai", settings)
    assert wants_batch(req(tags={"batch": "true"}), "anthropic", settings)
    assert wants_batch(req(feature="nightly"), "openai", settings)
    assert not wants_batch(req(feature="nightly", tags={"batch": "false"}), "openai", settings)
    assert not wants_batch(req(feature="nightly", lane="interactive"), "openai", settings)
    assert not wants_batch(req(tags={"batch": "true"}), "vllm", settings)
    everything = load_settings({"SLUICE_BATCH__ENABLED": "true"})
    assert wants_batch(req(), "openai", everything)


def _submitted(api: FakeBatchAPI, n: int = 1) -> None:
    deadline = time.monotonic() + 5
    while len(api.batches) < n:
        assert time.monotonic() < deadline, "no batch was submitted"
        time.sleep(0.005)


def test_a_redelivered_call_is_answered_from_its_earlier_batch_not_sent_again(make: Any) -> None:
    from workers.batch.placements import MemoryPlacements, Placement

    api = FakeBatchAPI(polls=10**9)  # the batch runs until the first worker is gone
    placements = MemoryPlacements()
    first = make(api, max_wait_s=0.01, placements=placements)
    first.submit(call("linen towel"), key="task-1")
    _submitted(api)
    assert placements.get("task-1") == Placement("openai", "gpt-4o-mini", "batch_0", "r0",
                                                 size=1)
    first.close()  # the worker dies with its request still in the provider's batch
    api.polls = 1  # ... which the provider then finishes
    second = make(api, max_wait_s=0.01, placements=placements)
    redelivered = [second.submit(call("linen towel"), key="task-1") for _ in range(2)]
    assert [f.result(timeout=5).text for f in redelivered] == ["re: linen towel"] * 2
    assert len(api.batches) == 1 and second.submitted == []  # the provider billed it once
    fresh = second.submit(call("cotton sheet"), key="task-2")  # unplaced keys batch as before
    assert fresh.result(timeout=5).text == "re: cotton sheet"
    assert second.submitted == ["batch_1"]


def test_a_placement_store_that_fails_does_not_stop_batching(make: Any) -> None:
    class Broken:
        def get(self, key: str) -> None:
            raise ConnectionError("redis is away")

        def put(self, placed: Any) -> None:
            raise ConnectionError("redis is away")

    api = FakeBatchAPI(polls=1)
    collector = make(api, max_wait_s=0.01, placements=Broken())
    assert collector.submit(call("item"), key="task-x").result(timeout=5).text == "re: item"


def test_a_batch_is_cancelled_at_the_provider_only_once_all_its_callers_cancelled(
        make: Any) -> None:
    from workers.batch.placements import MemoryPlacements

    api = FakeBatchAPI(polls=10**9)
    placements = MemoryPlacements()
    collector = make(api, max_size=2, placements=placements)
    collector.submit(call("a"), key="task-a")
    collector.submit(call("b"), key="task-b")
    _submitted(api)
    a, b = collector.placement("task-a"), collector.placement("task-b")
    assert a is not None and b is not None and a.size == b.size == 2
    assert collector.cancel(a) is False and api.cancelled == []  # "b" still wants its answer
    assert collector.cancel(a) is False  # the same caller twice counts once
    assert collector.cancel(b) is True and api.cancelled == ["batch_0"]
