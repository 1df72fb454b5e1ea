"""ops/metrics.py: figures read from a ledger at scrape time, a fresh registry, guarded serving."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from models.db import ledger
from models.db.engine import make_engine, session_factory
from ops.cli.metrics import check_bind, guarded, is_loopback
from ops.metrics import LATENCY_BOUNDS_MS, build_registry

ROOT = Path(__file__).resolve().parents[2]


def _row(i: int, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": f"m-{i}", "created_at": datetime.now(timezone.utc), "org": "default",
        "team": "catalog", "feature": "title-rephrase", "user": "u1", "lane": "interactive",
        "tier": "cheap", "provider": "openai", "model": "gpt-4o-mini", "backend": "api",
        "outcome": "ok", "cache_hit": False, "input_uncached": 100, "cache_read": 1000,
        "output": 10, "cost": Decimal("0.0001"), "list_cost": Decimal("0.0003"),
        "baseline_cost": Decimal("0.003"), "price_version": "t", "latency_ms": 40.0}
    row.update(kw)
    return row


@pytest.fixture
def sessions(tmp_path: Path) -> Any:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory() as s:
        ledger.record(s, _row(1))
        ledger.record(s, _row(2, latency_ms=700.0))
        ledger.record(s, _row(3, outcome="cache_hit", cache_hit=True, cost=Decimal(0),
                              list_cost=Decimal(0), latency_ms=3.0))
        ledger.record(s, _row(4, team="marketing", feature="seo-article", lane="async",
                              tier="flagship", model="gpt-4o", cost=Decimal("0.01"),
                              list_cost=Decimal("0.012"), baseline_cost=Decimal("0.012"),
                              latency_ms=4000.0))
        s.commit()
    yield factory
    engine.dispose()


def _scrape(registry: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples[name] if all(s.labels.get(k) == v
                                                   for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def test_nothing_registers_at_import_and_registries_are_fresh(sessions: Any) -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)  # noqa: SLF001
    a, b = build_registry(sessions), build_registry(sessions)
    assert a is not b
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before  # noqa: SLF001


def test_requests_money_and_cache_figures_come_from_the_ledger(sessions: Any) -> None:
    m = _scrape(build_registry(sessions, cache_s=0))
    assert _value(m, "sluice_requests_total", tier="cheap", outcome="ok") == 2
    assert _value(m, "sluice_requests_total", tier="cheap", outcome="cache_hit") == 1
    assert _value(m, "sluice_cost_usd_total", feature="title-rephrase") == pytest.approx(0.0002)
    assert _value(m, "sluice_baseline_cost_usd_total", feature="title-rephrase") == \
        pytest.approx(0.009)
    # 3 baselines of 0.003: the hit saved its whole baseline, routing the flagship premium.
    assert _value(m, "sluice_saved_usd_total", feature="title-rephrase",
                  lever="response_cache") == pytest.approx(0.003)
    assert _value(m, "sluice_saved_usd_total", feature="title-rephrase",
                  lever="routing") == pytest.approx(0.006 - 0.0006)
    assert _value(m, "sluice_saved_usd_total", feature="title-rephrase",
                  lever="prompt_caching") == pytest.approx(0.0006 - 0.0002)
    assert _value(m, "sluice_cache_hit_ratio", feature="title-rephrase") == pytest.approx(1 / 3)
    assert _value(m, "sluice_tokens_total", feature="seo-article", kind="cache_read") == 1000


def test_latency_histogram_counts_answered_requests_only(sessions: Any) -> None:
    m = _scrape(build_registry(sessions, cache_s=0))
    # The cache hit (3 ms, copied timings) is left out: two interactive answers, 40 and 700 ms.
    assert _value(m, "sluice_request_latency_ms_count", lane="interactive") == 2
    assert _value(m, "sluice_request_latency_ms_bucket", lane="interactive", le="50.0") == 1
    assert _value(m, "sluice_request_latency_ms_bucket", lane="interactive", le="1000.0") == 2
    assert _value(m, "sluice_request_latency_ms_sum", lane="async") == 4000
    assert len(LATENCY_BOUNDS_MS) + 1 == len([s for s in m["sluice_request_latency_ms_bucket"]
                                              if s.labels["lane"] == "async"])


def test_budgets_and_pauses_when_the_tables_exist(sessions: Any) -> None:
    budgets = pytest.importorskip("models.db.budgets")
    with sessions() as s:
        budgets.set_budget(s, "team", "catalog", "daily", hard=Decimal("1.00"))
        s.commit()
    m = _scrape(build_registry(sessions, cache_s=0))
    remaining = _value(m, "sluice_budget_remaining_usd", scope="team", key="catalog")
    assert remaining == pytest.approx(1.0 - 0.0002)  # the day's ledger spend counts
    assert _value(m, "sluice_queue_paused", queue="interactive.api") == 0
    assert _value(m, "sluice_metrics_source_up", source="budgets") == 1


def test_a_snapshot_is_reused_within_cache_seconds(sessions: Any) -> None:
    registry = build_registry(sessions, cache_s=60)
    first = _scrape(registry)
    with sessions() as s:
        ledger.record(s, _row(9))
        s.commit()
    assert _value(_scrape(registry), "sluice_requests_total", tier="cheap", outcome="ok") == \
        _value(first, "sluice_requests_total", tier="cheap", outcome="ok")
    fresh = _scrape(build_registry(sessions, cache_s=0))
    assert _value(fresh, "sluice_requests_total", tier="cheap", outcome="ok") == 3


def test_a_missing_ledger_is_reported_down_not_raised(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    m = _scrape(build_registry(session_factory(engine), cache_s=0))
    assert _value(m, "sluice_metrics_source_up", source="ledger") == 0
    engine.dispose()


def test_queue_depth_reads_the_broker(sessions: Any) -> None:
    from models.domain.settings import load_settings
    from queues.app import create_app

    app = create_app(load_settings({}))
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        for q in app.conf.task_queues:
            q(conn.default_channel).declare()
        producer.publish({"x": 1}, exchange="sluice", routing_key="async.api")
    m = _scrape(build_registry(sessions, app=app, cache_s=0))
    assert _value(m, "sluice_queue_depth", queue="async.api") >= 1
    assert _value(m, "sluice_metrics_source_up", source="broker") == 1


def test_the_dashboard_only_uses_exposed_metrics(sessions: Any) -> None:
    budgets = pytest.importorskip("models.db.budgets")
    with sessions() as s:
        budgets.set_budget(s, "org", "default", "monthly", hard=Decimal("5"))
        s.commit()
    from models.domain.settings import load_settings
    from queues.app import create_app

    exposed = set(_scrape(build_registry(sessions, app=create_app(load_settings({})),
                                         cache_s=0, shed=lambda: {"interactive": 0})))
    dashboard = json.loads((ROOT / "ops/grafana/sluicegate.json").read_text())
    used = {name for panel in dashboard["panels"] for t in panel["targets"]
            for name in re.findall(r"sluice_[a-z_]+", t["expr"])}
    assert used and used <= exposed, used - exposed
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))


def test_serving_refuses_an_open_bind_and_checks_credentials() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("metrics.example.com")
    assert check_bind("0.0.0.0", None, None) is not None
    assert check_bind("0.0.0.0", "ops:pw", None) is None
    assert check_bind("127.0.0.1", "no-colon", None) is not None
    seen: list[str] = []

    def app(environ: dict[str, Any], start: Any) -> list[bytes]:
        start("200 OK", [])
        return [b"ok"]

    wrapped = guarded(app, basic_auth="ops:pw", token="t0k")

    def call(header: str | None) -> str:
        env = {"HTTP_AUTHORIZATION": header} if header else {}
        wrapped(env, lambda status, headers: seen.append(status))
        return seen[-1]

    import base64

    assert call(None).startswith("401") and call("Bearer nope").startswith("401")
    assert call("Bearer t0k").startswith("200")
    assert call("Basic " + base64.b64encode(b"ops:pw").decode()).startswith("200")
    assert guarded(app) is app


def test_two_orgs_with_the_same_team_and_feature_are_two_series(sessions: Any) -> None:
    # Team and feature names are each org's own: merged, one org's spend would show as the
    # other's (as budgets, these series carry the org).
    with sessions() as s:
        ledger.record(s, _row(9, org="globex", cost=Decimal("0.5")))
        s.commit()
    m = _scrape(build_registry(sessions))
    assert _value(m, "sluice_cost_usd_total", org="globex", team="catalog",
                  feature="title-rephrase") == pytest.approx(0.5)
    assert _value(m, "sluice_cost_usd_total", org="default", team="catalog",
                  feature="title-rephrase") == pytest.approx(0.0002)
    assert _value(m, "sluice_feature_requests_total", org="globex", team="catalog",
                  feature="title-rephrase") == 1
