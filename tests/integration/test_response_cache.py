"""The response cache through the real gateway: a worker process, the stand-in, the PG ledger."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from models.db import spend
from models.db.engine import make_engine, session_factory
from models.domain.result import ChatResult
from queues.response_cache import RedisResponseCache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def feature() -> str:
    """A feature name of this test alone, so ledger sums and cache scopes are its own."""
    return f"rc-{uuid.uuid4().hex[:10]}"


def req(feature: str, content: str, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"team": "support", "feature": feature, "model": "gpt-4o-mini",
                            "max_tokens": 30, "messages": [{"role": "user", "content": content}]}
    data.update(kw)
    return data


def calls(standin: Any) -> int:
    return int(standin.stats()["requests"])


def outcomes(sessions: Any, feature: str) -> dict[str, list[Any]]:
    from sqlalchemy import select

    from models.db.tables import LedgerRow

    with sessions() as s:
        rows = s.scalars(select(LedgerRow).where(LedgerRow.feature == feature)).all()
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(r.outcome, []).append(r)
    return out


def test_a_repeat_is_a_free_hit_that_never_reaches_the_provider(
        gateway: Any, standin: Any, sessions: Any, feature: str) -> None:
    before = calls(standin)
    first = gateway.complete(req(feature, "How do I reset my password?"), timeout=30)
    assert not first.cache_hit and first.cost > 0
    second = gateway.complete(req(feature, "How do I  reset my password?\n"), timeout=30)
    assert calls(standin) - before == 1  # the whitespace variant never left the gateway
    assert second.cache_hit and second.text == first.text
    assert second.cost == 0 and second.baseline_cost == first.baseline_cost > 0
    assert second.request_id != first.request_id
    gateway.flush()  # cache-hit rows are written in the background
    rows = outcomes(sessions, feature)
    assert [r.request_id for r in rows["ok"]] == [first.request_id]
    hit = rows["cache_hit"][0]
    assert hit.request_id == second.request_id and hit.cache_hit
    assert hit.cost == 0 and hit.baseline_cost == first.baseline_cost
    with sessions() as s:
        line = next(x for x in spend.spend_by(s, "feature") if x.key == (feature,))
    assert (line.requests, line.cache_hits) == (2, 1)
    assert line.saved == 2 * first.baseline_cost - first.cost


def test_bypass_neither_reads_nor_writes(gateway: Any, standin: Any, feature: str) -> None:
    before = calls(standin)
    for _ in range(2):
        r = gateway.complete(req(feature, "Bypass me", cache={"mode": "bypass"}), timeout=30)
        assert not r.cache_hit
    assert calls(standin) - before == 2
    assert gateway.cache.peek(_parsed(req(feature, "Bypass me"))) is None
    gateway.complete(req(feature, "Bypass me"), timeout=30)
    assert calls(standin) - before == 3  # nothing had been stored for it


def test_refresh_calls_the_provider_and_overwrites(gateway: Any, standin: Any,
                                                   feature: str) -> None:
    gateway.complete(req(feature, "Refresh me"), timeout=30)
    before = calls(standin)
    fresh = gateway.complete(req(feature, "Refresh me", cache={"mode": "refresh"}), timeout=30)
    assert not fresh.cache_hit and calls(standin) - before == 1
    stored = gateway.cache.peek(_parsed(req(feature, "Refresh me")))
    assert stored is not None and stored.request_id == fresh.request_id
    assert gateway.complete(req(feature, "Refresh me"), timeout=30).cache_hit
    assert calls(standin) - before == 1


def test_sampled_requests_are_not_cached_unless_opted_in(gateway: Any, standin: Any,
                                                         feature: str) -> None:
    before = calls(standin)
    for _ in range(2):
        gateway.complete(req(feature, "Write a haiku", temperature=0.8), timeout=30)
    assert calls(standin) - before == 2
    opted = req(feature, "Write a limerick", temperature=0.8,
                cache={"allow_nondeterministic": True})
    gateway.complete(opted, timeout=30)
    assert gateway.complete(opted, timeout=30).cache_hit
    assert calls(standin) - before == 3


def test_another_team_never_reads_the_entry(gateway: Any, standin: Any, feature: str) -> None:
    before = calls(standin)
    gateway.complete(req(feature, "Our refund policy?"), timeout=30)
    other = gateway.complete(req(feature, "Our refund policy?", team="sales"), timeout=30)
    assert not other.cache_hit and calls(standin) - before == 2


def test_identical_concurrent_misses_make_one_provider_call(
        gateway: Any, standin: Any, sessions: Any, feature: str) -> None:
    standin.script_faults(["timeout=1.0"], model="gpt-4o-mini")  # the first call takes 1 s
    before = calls(standin)
    results: list[ChatResult] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(gateway.complete(req(feature, "Shipping times to Oslo?"), timeout=30))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors and len(results) == 6
    assert calls(standin) - before == 1 and standin.stats()["faults_pending"] == 0
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 5
    assert len({r.text for r in results}) == 1
    gateway.flush()  # cache-hit rows are written in the background
    rows = outcomes(sessions, feature)
    assert len(rows["ok"]) == 1 and len(rows["cache_hit"]) == 5
    assert gateway.cache.stats()["single_flight_hit"] >= 5


def test_redis_down_fails_open(integration_settings: Any, celery_worker_proc: Any,
                               standin: Any, feature: str) -> None:
    from queues.producer import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = integration_settings.model_copy(update={"cache": integration_settings.cache.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{port}/0"})})
    cache = RedisResponseCache(dead)
    gw = connect(integration_settings, cache=cache)
    try:
        before = calls(standin)
        result = gw.complete(req(feature, "Is the cache up?"), timeout=30)
        assert result.text and not result.cache_hit and calls(standin) - before == 1
        assert cache.stats()["error"] == 1
    finally:
        gw.close()


def test_cli_stats_and_flush(gateway: Any, standin: Any, integration_env: dict[str, str],
                             monkeypatch: Any, feature: str) -> None:
    from ops.cli.cache import cache_app

    for _ in range(3):
        last = gateway.complete(req(feature, "Opening hours?"), timeout=30)
    assert last.cache_hit
    gateway.flush()  # cache-hit rows are written in the background
    for name, value in integration_env.items():
        monkeypatch.setenv(name, value)
    out = CliRunner().invoke(cache_app, ["stats", "--json"])
    assert out.exit_code == 0, out.output
    row = next(r for r in json.loads(out.output) if r["feature"] == feature)
    assert (row["requests"], row["hits"], row["hit_rate"]) == (3, 2, 0.6667)
    assert Decimal(row["saved_vs_baseline"]) == 2 * last.baseline_cost > 0
    assert Decimal(row["avoided_spend"]) > 0
    out = CliRunner().invoke(cache_app, ["flush", "--team", "support", "--feature", feature])
    assert out.exit_code == 0 and "flushed 1 entries" in out.output, out.output
    before = calls(standin)
    assert not gateway.complete(req(feature, "Opening hours?"), timeout=30).cache_hit
    assert calls(standin) - before == 1
    assert CliRunner().invoke(cache_app, ["flush"]).exit_code == 2  # a scope is required


def _parsed(data: dict[str, Any]) -> Any:
    from models.domain.request import parse_request

    return parse_request(data)
