"""One suite over the response cache's Redis store and its in-memory twin; fail-open on its own."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from models.domain.request import ChatRequest, parse_request
from models.domain.result import ChatResult, Route
from models.domain.settings import load_settings
from ops.bench.harness import free_port
from queues.memory_cache import MemoryResponseCache, MemoryState
from queues.response_cache import RedisResponseCache, ResponseCacheBase, decode_value

pytestmark = pytest.mark.integration

FEATURES = {"short": {"ttl_s": 1}, "faq": {"lowercase": True, "patterns": ["iso_timestamp"]},
            "sampled": {"allow_nondeterministic": True}}


def make(kind: str, redis_url: str | None, **cache: Any) -> ResponseCacheBase:
    conf: dict[str, Any] = {"features": FEATURES, "key_prefix": f"sgt{uuid.uuid4().hex[:8]}:",
                            "single_flight_wait_s": 2.0, **cache}
    if kind == "redis":
        conf["redis_url"] = redis_url
        return RedisResponseCache(load_settings({}, cache=conf))
    return MemoryResponseCache(load_settings({}, cache=conf), state=MemoryState())


@pytest.fixture(params=["memory", "redis"])
def make_cache(request: Any) -> Iterator[Any]:
    url = request.getfixturevalue("redis_db_url") if request.param == "redis" else None
    made: list[ResponseCacheBase] = []

    def factory(**cache: Any) -> ResponseCacheBase:
        made.append(make(request.param, url, **cache))
        return made[-1]

    yield factory
    for c in made:
        if isinstance(c, RedisResponseCache):
            c.flush()
            c.close()


def req(content: str = "How do I reset my password?", **kw: Any) -> ChatRequest:
    data: dict[str, Any] = {"team": "support", "feature": "faq",
                            "messages": [{"role": "user", "content": content}]}
    data.update(kw)
    return parse_request(data)


def result(text: str = "Use the reset link.", rid: str = "first") -> ChatResult:
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    return ChatResult(request_id=rid, text=text, provider="openai", model="gpt-4o-mini",
                      route=route, cost="0.0001", baseline_cost="0.001")


def test_a_stored_answer_serves_an_equivalent_request_as_a_free_hit(make_cache: Any) -> None:
    cache = make_cache()
    first = req("How do I reset my password? 2026-01-05T10:00:00Z")
    assert cache.lookup(first) is None
    cache.store(first, result())
    again = req("how do I reset  my password? 2026-03-01T12:00:00Z")
    hit = cache.lookup(again)
    assert hit is not None and hit.text == "Use the reset link."
    assert hit.cache_hit and hit.cost == 0 and hit.request_id == again.request_id
    assert isinstance(hit.cost, Decimal) and hit.list_cost == 0  # money stays Decimal
    assert hit.baseline_cost == result().baseline_cost
    assert cache.lookup(req("How do I reset my email?")) is None
    assert cache.stats()["hit"] == 1 and cache.stats()["store"] == 1


def test_modes_and_cacheability(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0)
    cache.store(req("bypassed", cache={"mode": "bypass"}), result("b"))
    assert cache.peek(req("bypassed")) is None
    cache.store(req("q"), result("old"))
    assert cache.lookup(req("q", cache={"mode": "refresh"})) is None  # refresh skips the read
    cache.store(req("q", cache={"mode": "refresh"}), result("new", rid="refreshed"))
    assert cache.lookup(req("q")).text == "new"  # type: ignore[union-attr]
    assert cache.peek(req("q")).request_id == "refreshed"  # type: ignore[union-attr]
    cache.store(req("hot", temperature=0.7), result("t"))
    assert cache.peek(req("hot", temperature=0.7)) is None
    opted = req("hot", temperature=0.7, cache={"allow_nondeterministic": True})
    cache.store(opted, result("t"))
    assert cache.lookup(req("hot", temperature=0.7)) is None  # reading needs the opt-in too
    assert cache.lookup(opted) is not None
    cache.store(req("hot", feature="sampled", temperature=0.7), result("s"))
    assert cache.lookup(req("hot", feature="sampled", temperature=0.7)).text == "s"  # type: ignore[union-attr]
    off = make_cache(features={"faq": {"enabled": False}})
    off.store(req("q"), result())
    assert off.peek(req("q")) is None


def test_ttl_per_feature(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0)
    cache.store(req("ttl", feature="short"), result())
    cache.store(req("ttl"), result())
    assert cache.lookup(req("ttl", feature="short")) is not None
    time.sleep(1.15)
    assert cache.lookup(req("ttl", feature="short")) is None
    assert cache.lookup(req("ttl")) is not None  # the default TTL is an hour


def test_large_values_are_compressed_and_oversized_ones_skipped(make_cache: Any) -> None:
    cache = make_cache(max_value_bytes=20_000, single_flight_wait_s=0)
    big = result("All work and no play. " * 2000)  # ~44 KB of text, compresses well
    cache.store(req("big"), big)
    raw = cache._get(cache.entry_key(cache.key(req("big"))))
    assert raw is not None and raw[:1] == b"z" and len(raw) < 5_000
    assert decode_value(raw).text == big.text
    assert cache.lookup(req("big")).text == big.text  # type: ignore[union-attr]
    noise = result(secrets.token_hex(30_000))  # 60 KB that compresses to about 30 KB
    cache.store(req("noise"), noise)
    assert cache.peek(req("noise")) is None and cache.stats()["too_large"] == 1


def test_entries_per_scope_are_bounded(make_cache: Any) -> None:
    cache = make_cache(max_entries_per_scope=3, single_flight_wait_s=0)
    for i in range(6):
        cache.store(req(f"question {i}"), result(str(i)))
    cache.store(req("question x", team="other"), result("x"))
    kept = [i for i in range(6) if cache.peek(req(f"question {i}")) is not None]
    assert len(kept) == 3
    assert cache.peek(req("question x", team="other")) is not None  # another scope's room


def test_flush_by_scope(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0)
    cache.store(req("a"), result())
    cache.store(req("a", feature="other"), result())
    cache.store(req("a", team="sales"), result())
    assert cache.flush(team="support", feature="faq") == 1
    assert cache.peek(req("a")) is None
    assert cache.peek(req("a", feature="other")) is not None
    assert cache.flush(team="support") == 1
    assert cache.peek(req("a", team="sales")) is not None
    with pytest.raises(Exception, match="not a valid name"):
        cache.flush(team="*")


def test_single_flight_followers_get_the_leaders_answer(make_cache: Any) -> None:
    cache = make_cache()
    assert cache.lookup(req("sf")) is None  # the leader: goes on to the provider
    got: list[Any] = []
    follower = threading.Thread(target=lambda: got.append(cache.lookup(req("sf"))))
    started = time.monotonic()
    follower.start()
    time.sleep(0.3)
    assert follower.is_alive()  # waiting, not calling the provider
    cache.store(req("sf"), result("led"))
    follower.join(5)
    assert got and got[0] is not None and got[0].text == "led" and got[0].cache_hit
    assert 0.3 <= time.monotonic() - started < 1.5
    assert cache.stats()["single_flight_hit"] == 1


def test_single_flight_wait_is_bounded(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0.4)
    assert cache.lookup(req("lost")) is None  # a leader that never stores
    started = time.monotonic()
    assert cache.lookup(req("lost")) is None
    assert 0.35 <= time.monotonic() - started < 1.0
    # The lock expired with the wait: the next miss leads again, at once.
    started = time.monotonic()
    assert cache.lookup(req("lost")) is None and time.monotonic() - started < 0.2


def test_a_leader_refused_before_the_queue_abandons_its_lock(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0.5)
    assert cache.lookup(req("refused")) is None  # a leader
    cache.abandon(req("refused"))  # another request id: not the holder, the lock stays
    started = time.monotonic()
    assert cache.lookup(req("refused")) is None
    assert time.monotonic() - started >= 0.4  # it waited for the first leader
    leader = req("refused")
    assert cache.lookup(leader) is None  # the lock expired: a new leader
    cache.abandon(leader)  # e.g. BudgetExceeded: it will never store
    started = time.monotonic()
    assert cache.lookup(req("refused")) is None
    assert time.monotonic() - started < 0.2  # nobody waited for it


def test_an_oversized_answer_releases_its_waiters(make_cache: Any) -> None:
    cache = make_cache(max_value_bytes=100, single_flight_wait_s=5)
    assert cache.lookup(req("sf2")) is None
    cache.store(req("sf2"), result("x" * 500))
    started = time.monotonic()
    assert cache.lookup(req("sf2")) is None and time.monotonic() - started < 0.5


def test_a_corrupt_value_is_a_miss(make_cache: Any) -> None:
    cache = make_cache(single_flight_wait_s=0)
    cache.store(req("c"), result())
    entry = cache.entry_key(cache.key(req("c")))
    cache._put(entry, cache.prefix + "i:x", b"j{not json", 60_000, cache.prefix + "l:x")
    assert cache.lookup(req("c")) is None and cache.stats()["corrupt"] == 1


# -- fail open ---------------------------------------------------------------------------------

def test_redis_down_is_a_miss_and_a_warning(caplog: Any) -> None:
    cache = make("redis", f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="queues.response_cache"):
        started = time.monotonic()
        for _ in range(3):
            assert cache.lookup(req("down")) is None
            cache.store(req("down"), result())  # no exception either
    assert time.monotonic() - started < 0.5
    # Three failures in a row trip the back-off: later calls skip the store without trying.
    assert cache.stats()["error"] == 3 and cache.stats()["skipped"] == 3
    assert cache.stats()["miss"] == 3
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1


def test_the_cache_recovers_after_the_back_off(redis_db_url: str, caplog: Any) -> None:
    cache = make("redis", redis_db_url)
    real = cache.client
    cache.client = type(real).from_url(f"redis://127.0.0.1:{free_port()}/0")
    for _ in range(3):
        assert cache.lookup(req("back")) is None
    assert cache._down_until > 0
    cache.client, cache._down_until = real, time.monotonic()  # the back-off has elapsed
    cache.store(req("back"), result())
    assert cache.lookup(req("back")) is not None and cache._failures == 0
    cache.flush()


def test_a_slow_redis_times_out_quickly() -> None:
    # Accepts connections, never answers: the lookup must not wait for the OS.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        cache = make("redis", f"redis://127.0.0.1:{port}/0", timeout_ms=50)
        started = time.monotonic()
        assert cache.lookup(req("slow")) is None
        assert time.monotonic() - started < 0.4
        assert cache.stats()["error"] == 1


def test_the_embedded_default_shares_one_store_between_producer_and_worker() -> None:
    from queues.response_cache import build_response_cache

    settings = load_settings({}, cache={"key_prefix": f"emb{uuid.uuid4().hex[:8]}:"})
    producer, worker = build_response_cache(settings), build_response_cache(settings)
    assert isinstance(producer, MemoryResponseCache) and producer is not worker
    worker.store(req("shared"), result("from the worker"))  # type: ignore[union-attr]
    assert producer.lookup(req("shared")).text == "from the worker"  # type: ignore[union-attr]
    assert build_response_cache(load_settings({}, cache={"enabled": False})) is None
