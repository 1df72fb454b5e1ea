"""Tenancy of budgets and of the producer's records, on PostgreSQL, Redis and a real worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from models.db.budgets import delete_budget, get_budget, list_budgets, set_budget
from models.db.engine import make_engine, session_factory
from models.domain.errors import BrokerError, BudgetExceeded
from models.domain.settings import load_settings
from queues.inflight import Inflight
from queues.producer import Gateway
from scheduler import governor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url, pool_size=4)
    yield session_factory(engine)
    engine.dispose()


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def ask(org: str, team: str, feature: str = "tenancy", **kw: Any) -> dict[str, Any]:
    return {"request_id": f"ten-{uuid.uuid4().hex}", "org": org, "team": team,
            "feature": feature, "model": "cheap", "max_tokens": 40, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Tagline for a lamp {_tag()}"}], **kw}


def budget(sessions: Any, gateway: Any, scope: str, key: str, hard: str, **kw: Any) -> Any:
    with sessions() as s:
        b = set_budget(s, scope, key, "total", hard=Decimal(hard), **kw)
        s.commit()
    gateway.admission.invalidate()  # this process's producer sees it at once
    return b


def drop(sessions: Any, *budgets: Any) -> None:
    with sessions() as s:
        for b in budgets:
            delete_budget(s, b.scope, b.key, b.window, org=b.org)
        s.commit()


def test_a_team_budget_caps_its_own_org_only(gateway: Any, sessions: Any) -> None:
    team = f"catalog-{_tag()}"
    # Set as before this change (no org): the team of the default org, not of every org.
    cap = budget(sessions, gateway, "team", team, "0.000001")
    try:
        with pytest.raises(BudgetExceeded) as refused:
            gateway.complete(ask("default", team), timeout=30)
        assert refused.value.details["budget"] == f"team:{team}:total"
        # Team "catalog" of another org is another team: its own budget, not this one.
        assert gateway.complete(ask(f"acme-{_tag()}", team), timeout=30).text
        with sessions() as s:
            assert get_budget(s, "team", team, "total").spent == 0
    finally:
        drop(sessions, cap)


def test_another_orgs_requests_never_count_against_a_budget_of_the_same_name(
        gateway: Any, sessions: Any) -> None:
    feature = f"search-{_tag()}"
    cap = budget(sessions, gateway, "feature", feature, "1")
    try:
        gateway.complete(ask(f"globex-{_tag()}", "intruder", feature), timeout=30)
        with sessions() as s:
            got = get_budget(s, "feature", feature, "total")
        assert (got.spent, got.reserved) == (0, 0)  # globex cannot exhaust it
        gateway.complete(ask("default", "owner", feature), timeout=30)
        with sessions() as s:
            assert get_budget(s, "feature", feature, "total").spent > 0  # the control
    finally:
        drop(sessions, cap)


def test_an_orgs_hard_limit_stops_that_org_and_pauses_nothing(gateway: Any,
                                                              sessions: Any) -> None:
    app = gateway.app
    acme, globex = f"acme-{_tag()}", f"globex-{_tag()}"
    cap = budget(sessions, gateway, "org", acme, "0.01")
    app.control.cancel_consumer("async.api", reply=True, timeout=10)
    try:
        # Both orgs queue work while no worker takes the async lane.
        mine = gateway.submit(ask(acme, "t", lane="async"))
        theirs = gateway.submit(ask(globex, "t", lane="async"))
        with sessions() as s:
            assert get_budget(s, "org", acme, "total").reserved > 0
        # Acme's limit is cut below what it has committed; its next request is refused ...
        budget(sessions, gateway, "org", acme, "0")
        with pytest.raises(BudgetExceeded):
            gateway.submit(ask(acme, "t", lane="async"))
        # ... which pauses no queue: those are every org's.
        with sessions() as s:
            assert governor.paused_queues(s) == {}
        time.sleep(1.1)  # the workers' pause and budget caches
    finally:
        app.control.add_consumer("async.api", reply=True, timeout=10)
    # At the worker's second check acme's queued request is refused; globex's runs.
    with pytest.raises(BudgetExceeded) as refused:
        mine.result(timeout=30)
    assert refused.value.details["budget"] == f"org:{acme}:total"
    assert theirs.result(timeout=30).text
    with sessions() as s:
        assert get_budget(s, "org", acme, "total").reserved == 0
    drop(sessions, cap)


def test_a_deployment_wide_lane_budget_still_pauses_its_queues(gateway: Any,
                                                               sessions: Any) -> None:
    cap = budget(sessions, gateway, "lane", "async", "0")
    try:
        assert cap.org == "*" and cap.pauses
        with pytest.raises(BudgetExceeded):
            gateway.submit(ask(f"any-{_tag()}", "t", lane="async"))
        with sessions() as s:
            assert set(governor.paused_queues(s)) == {"async.api", "async.gpu"}
    finally:
        drop(sessions, cap)
        governor.resume(sessions, ["async.api", "async.gpu"])


def test_an_unpublished_message_leaves_no_inflight_record(redis_db_url: str,
                                                          integration_env: dict[str, str]
                                                          ) -> None:
    # The broker refuses the publish; the in-flight record (written first) must not stay, or
    # the sweeper sends the request later, behind a caller who was told it failed.
    client = redis.Redis.from_url(redis_db_url)
    box = Inflight(client, prefix=f"sgten-{_tag()}:")
    settings = load_settings({**integration_env, "SLUICE_BROKER__URL": "redis://127.0.0.1:1/0"})
    gw = Gateway(settings, inflight=box)
    try:
        with pytest.raises(BrokerError):
            gw.submit(ask("default", "t"))
        assert box.stale(0) == []
        assert client.zcard(box.times) == 0 and client.hlen(box.bodies) == 0
    finally:
        gw.close()
        client.delete(box.times, box.bodies)
        client.close()


def test_budgets_list_by_org(gateway: Any, sessions: Any) -> None:
    team = f"t-{_tag()}"
    a = budget(sessions, gateway, "team", team, "5", org="acme")
    b = budget(sessions, gateway, "team", team, "7", org="globex")
    try:
        assert (a.id != b.id) and a.name == f"acme/team:{team}:total"
        with sessions() as s:
            mine = [x for x in list_budgets(s, org="acme") if x.key == team]
        assert [(x.org, x.hard_limit) for x in mine] == [("acme", Decimal(5))]
    finally:
        drop(sessions, a, b)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_ledger(request: Any, tmp_path: Any) -> Iterator[str]:
    """An empty ledger at the schema just before tenancy (0005), on SQLite and on PostgreSQL."""
    from ops.db import upgrade
    from tests.services import postgres_admin_url

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url, "0005")
        yield url
        return
    import psycopg

    admin = postgres_admin_url()
    name = f"sluice_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    upgrade(url, "0005")
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migration_gives_each_org_its_own_budgets(old_ledger: str) -> None:
    from sqlalchemy import text

    from ops.db import upgrade

    engine = make_engine(old_ledger)
    now = "2026-12-01 00:00:00+00:00"
    budget_sql = text(
        "INSERT INTO budgets (scope, key, \"window\", hard_limit, spent, reserved, "
        "window_start, updated_at) VALUES (:scope, :key, 'total', :hard, :spent, 0, :now, :now)")
    row_sql = text(
        "INSERT INTO ledger (request_id, created_at, org, team, feature, lane, tier, provider, "
        "model, backend, route_reason, outcome, cache_hit, batch, input_uncached, cache_read, "
        "cache_write_5m, cache_write_1h, output, reasoning, cost, baseline_cost, list_cost, "
        "price_version, latency_ms, queued_ms, provider_ms, volatile_prefix, prompt_hash) "
        "VALUES (:rid, :now, :org, 'catalog', 'f', 'interactive', 'cheap', 'openai', 'm', "
        "'api', '', 'ok', false, false, 0, 0, 0, 0, 0, 0, :cost, 0, 0, 'v', 0, 0, 0, false, '')")
    pico = old_ledger.startswith("sqlite")  # SQLite stores money as integer pico-dollars

    def money(usd: str) -> Any:
        return int(Decimal(usd) * 10**12) if pico else Decimal(usd)

    with engine.begin() as conn:
        for scope, key, hard, spent in (("team", "catalog", "10", "3"),
                                        ("lane", "async", "50", "0"), ("org", "acme", "20", "1")):
            conn.execute(budget_sql, {"scope": scope, "key": key, "hard": money(hard),
                                      "spent": money(spent), "now": now})
        for rid, org, cost in (("r1", "default", "2"), ("r2", "acme", "1")):
            conn.execute(row_sql, {"rid": rid, "org": org, "cost": money(cost), "now": now})
        # The org budget had paused every queue, as the previous release did.
        org_id = conn.execute(text("SELECT id FROM budgets WHERE scope = 'org'")).scalar()
        conn.execute(text("INSERT INTO pauses (queue, cause, reason, budget_id, created_at) "
                          "VALUES ('interactive.api', 'budget:1', 'org cap', :b, :now)"),
                     {"b": org_id, "now": now})
    engine.dispose()
    upgrade(old_ledger)
    engine = make_engine(old_ledger)
    try:
        with session_factory(engine)() as s:
            got = {(b.org, b.scope, b.key): (b.hard_limit, b.spent) for b in list_budgets(s)}
            assert governor.paused_queues(s) == {}
        # The lane budget is deployment-wide; the org budget its own org's; the team budget
        # stays the default org's (with its spend) and acme, whose ledger shows that team,
        # gets its own copy with its own spend.
        assert got == {("*", "lane", "async"): (Decimal(50), Decimal(0)),
                       ("acme", "org", "acme"): (Decimal(20), Decimal(1)),
                       ("default", "team", "catalog"): (Decimal(10), Decimal(3)),
                       ("acme", "team", "catalog"): (Decimal(10), Decimal(1))}
    finally:
        engine.dispose()
