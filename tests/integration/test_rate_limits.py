"""Rate limits against real Redis: exact under 64 concurrent producers, all or nothing across
windows, a property over random arrival patterns, refunds and token corrections, and a Redis
restart (limits fail closed, then work again)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from models.domain.errors import RateLimited, RateLimiterUnavailable, ValidationError
from models.domain.ratelimit import RateLimit
from models.domain.request import ChatRequest
from models.domain.result import Route
from scheduler.ratelimit import RedisRateLimiter

pytestmark = pytest.mark.integration

ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive")


def req(team: str = "t", key: str | None = None, feature: str = "f", max_tokens: int = 10
        ) -> ChatRequest:
    return ChatRequest(team=team, feature=feature, api_key=key, max_tokens=max_tokens,
                       messages=[{"role": "user", "content": "hi"}])


def index_of(*limits: RateLimit) -> dict[tuple[str, str, str], list[RateLimit]]:
    out: dict[tuple[str, str, str], list[RateLimit]] = defaultdict(list)
    for lim in limits:
        out[(lim.org, lim.scope, lim.key)].append(lim)
    return dict(out)


@pytest.fixture()
def client(redis_db_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_db_url)
    yield c
    c.close()


class Clock:
    """A clock the test moves: windows roll only when it says."""

    def __init__(self, now: float = 1_000_020.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(client: redis.Redis, *limits: RateLimit, clock: Any = None) -> RedisRateLimiter:
    index = index_of(*limits)
    return RedisRateLimiter(client, lambda: index, prefix=f"rltest{uuid.uuid4().hex[:8]}:",
                            clock=clock or Clock())


def window_values(rl: RedisRateLimiter) -> dict[str, int]:
    return {k.decode(): int(rl.client.get(k) or 0)
            for k in rl.client.scan_iter(f"{rl.prefix}rl:*") if b":done:" not in k
            and not k.endswith(b"refusals")}


def test_64_concurrent_producers_never_over_admit_any_window(client: redis.Redis) -> None:
    # Three limits of different sizes share every request; tokens bind the team first.
    rl = limiter(client, RateLimit("key", "k1", rpm=50), RateLimit("team", "t", tpm=4000),
                 RateLimit("model", "gpt-4o-mini", org="*", rpm=45))
    admitted: list[Any] = []
    refused: list[RateLimited] = []
    lock = threading.Lock()
    start = threading.Barrier(64)

    def producer() -> None:
        start.wait()
        for _ in range(4):
            try:
                grant = rl.acquire(req(key="k1", max_tokens=99), ROUTE, 1 + 99)
            except RateLimited as err:
                with lock:
                    refused.append(err)
            else:
                with lock:
                    admitted.append(grant)

    threads = [threading.Thread(target=producer) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # team tokens 4000 / 100 per request = 40, the tightest of the three.
    assert len(admitted) == 40 and len(refused) == 256 - 40
    values = window_values(rl)
    by_limit = {k.split(":rl:")[1].rsplit(":", 2)[0]: v for k, v in values.items()}
    # All or nothing: every window holds exactly the admitted requests, none a refused one.
    assert by_limit == {"default:key:k1:requests": 40, "default:team:t:tokens": 4000,
                        "*:model:gpt-4o-mini:requests": 40}
    assert {e.limit for e in refused} == {"team:t"}
    assert all(0 < e.retry_after_s <= 60 for e in refused)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=st.lists(st.tuples(st.floats(min_value=0, max_value=3.0),
                                   st.sampled_from(["a", "b"]),
                                   st.integers(min_value=1, max_value=40)),
                         min_size=1, max_size=60))
def test_random_arrivals_admit_exactly_what_fits_each_window(client: redis.Redis,
                                                             arrivals: list[Any]) -> None:
    """Against a model of fixed windows: each arrival is admitted exactly when every window
    it touches has room, and no window ever holds more than its limit."""
    clock = Clock(1_000_000.0)
    limits = [RateLimit("key", "a", rpm=5, window_s=1), RateLimit("key", "b", rpm=3, window_s=2),
              RateLimit("team", "t", tpm=120, window_s=1)]
    rl = limiter(client, *limits, clock=clock)
    model: dict[tuple[str, int], int] = defaultdict(int)
    for gap, key, tokens in arrivals:
        clock.now += gap
        mine = [lim for lim in limits if lim.key in (key, "t")]
        wants = []
        for lim in mine:
            cap, cost = (lim.rpm, 1) if lim.rpm else (lim.tpm, tokens)
            wants.append(((lim.name, int(clock.now // lim.window_s)), cap, cost))
        fits = all(model[w] + cost <= cap for w, cap, cost in wants)
        try:
            rl.acquire(req(key=key, max_tokens=tokens), ROUTE, tokens)
        except RateLimited:
            assert not fits
        else:
            assert fits
            for w, _cap, cost in wants:
                model[w] += cost
    caps = {lim.name: lim.rpm or lim.tpm for lim in limits}
    assert all(v <= caps[name] for (name, _w), v in model.items())


def test_a_refund_gives_every_window_back_and_only_once(client: redis.Redis) -> None:
    rl = limiter(client, RateLimit("key", "k", rpm=1, tpm=100))
    grant = rl.acquire(req(key="k"), ROUTE, 60)
    with pytest.raises(RateLimited) as err:
        rl.acquire(req(key="k"), ROUTE, 60)
    assert err.value.limit == "key:k" and err.value.details["kind"] == "requests"
    rl.refund(grant)
    rl.refund(grant)  # a second refund of the same grant changes nothing
    assert set(window_values(rl).values()) == {0}
    assert rl.acquire(req(key="k"), ROUTE, 60) is not None


def test_settlement_corrects_the_token_estimate_once(client: redis.Redis) -> None:
    rl = limiter(client, RateLimit("team", "t", tpm=1000))
    grant = rl.acquire(req(), ROUTE, 600)
    rl.settle(grant, 150)
    rl.settle(grant, 150)  # a redelivered task's reply corrects nothing again
    assert list(window_values(rl).values()) == [150]
    assert rl.acquire(req(), ROUTE, 850) is not None  # the freed tokens admit more


def test_a_request_larger_than_a_whole_window_is_refused_for_good(client: redis.Redis) -> None:
    rl = limiter(client, RateLimit("team", "t", tpm=100))
    with pytest.raises(ValidationError) as err:
        rl.acquire(req(max_tokens=200), ROUTE, 201)
    assert err.value.field == "max_tokens"


def test_the_refusal_says_when_the_window_resets(client: redis.Redis) -> None:
    clock = Clock(1_000_020.0 + 45.5)  # 14.5 s before the minute's window ends
    rl = limiter(client, RateLimit("team", "t", rpm=1, tpm=50), clock=clock)
    rl.acquire(req(), ROUTE, 20)
    with pytest.raises(RateLimited) as err:
        rl.acquire(req(), ROUTE, 20)
    assert err.value.retry_after_s == pytest.approx(14.5, abs=0.01)
    assert err.value.details["rate"] == {
        "requests": {"limit": 1, "remaining": 0, "reset_s": pytest.approx(14.5, abs=0.01)},
        "tokens": {"limit": 50, "remaining": 30, "reset_s": pytest.approx(14.5, abs=0.01)}}
    assert rl.refusal_counts() == {"team:t:requests": 1}
    clock.now += 14.6
    assert rl.acquire(req(), ROUTE, 20) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(port: int, tmp: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            redis.Redis(port=port, socket_timeout=0.2).ping()
            return proc
        except redis.RedisError:
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_a_redis_restart_fails_closed_then_admits_again(tmp_path: Any) -> None:
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        rl = limiter(client, RateLimit("team", "t", rpm=2))
        assert rl.acquire(req(), ROUTE, 1) is not None
        proc.terminate()
        proc.wait(10)
        with pytest.raises(RateLimiterUnavailable):
            rl.acquire(req(), ROUTE, 1)  # nothing is admitted without the counters
        proc = _start_redis(port, tmp_path)
        # A fresh server has neither the script nor the windows: the script is sent again.
        assert rl.acquire(req(), ROUTE, 1) is not None
        assert rl.acquire(req(), ROUTE, 1) is not None
        with pytest.raises(RateLimited):
            rl.acquire(req(), ROUTE, 1)
    finally:
        client.close()
        proc.kill()
        proc.wait(10)


def test_prometheus_shows_each_limits_headroom_and_the_refusals_by_limit(
        client: redis.Redis) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from ops.rate_metrics import rate_families

    rl = limiter(client, RateLimit("key", "k", rpm=3), RateLimit("team", "t", tpm=100))
    rl.acquire(req(key="k"), ROUTE, 30)
    with pytest.raises(RateLimited):
        rl.acquire(req(key="k"), ROUTE, 80)

    class One:
        def collect(self) -> Any:
            return rate_families(rl)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(One())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert ('sluice_ratelimit_remaining{key="k",kind="requests",org="default",scope="key",'
            'window_s="60"} 2.0') in text
    assert ('sluice_ratelimit_remaining{key="t",kind="tokens",org="default",scope="team",'
            'window_s="60"} 70.0') in text
    assert 'sluice_ratelimit_refusals_total{kind="tokens",limit="team:t"} 1.0' in text
