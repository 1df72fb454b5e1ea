"""Gemini through the whole pipeline: real Celery workers, Redis, PostgreSQL, the SDK.

An explicit cache is created by one worker once the prefix's reuse passes break-even, reused
by a second worker started after the first stopped, deleted by the beat sweep once the prefix
goes cold; every request and every storage period is a ledger row, the budget equals the
ledger, and storage matches what the provider (the stand-in) would bill.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db.attempts import AttemptRow
from models.db.budgets import get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.usage import Usage
from queues.producer import connect
from scheduler.beat import CONTEXT_CACHE_TASK, GOVERNOR_QUEUE
from tests.services import run_token
from tests.worker_proc import celery_worker
from workers.providers.shaping import static_tokens
from workers.providers.standin import StandIn, StandInConfig

pytestmark = pytest.mark.integration
FLASH = load_catalogue().get("gemini-2.5-flash")
SYSTEM = "You classify support tickets for the store. " + " ".join(
    f"Category {i}: route it to desk {i % 7}." for i in range(250))
TTL_S = 120  # break-even on creation: (1.00 x 120/3600 + 0.30) / 0.27 = 1.2 requests
TEAM, FEATURE = "gemteam", "tickets"


@pytest.fixture(scope="module")
def gemini_standin() -> Iterator[Any]:
    # Implicit hits off: the explicit rule decides on reuse alone.
    with StandIn(StandInConfig(gemini_implicit_ttl_s=0.0)) as server:
        yield server


@pytest.fixture(scope="module")
def env(integration_env: dict[str, str], gemini_standin: Any) -> dict[str, str]:
    prefix = f"sggem{run_token()}:"
    return {**integration_env, "SLUICE_BROKER__KEY_PREFIX": prefix,
            "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:", "SLUICE_TEST_KEY_PREFIX": prefix,
            "SLUICE_PROVIDERS__GOOGLE_BASE_URL": gemini_standin.url,
            "SLUICE_PROVIDERS__GEMINI_CACHE_TTL_S": str(TTL_S),
            "SLUICE_PROVIDERS__GEMINI_CACHE_COLD_AFTER_S": "1"}


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def ask(i: int) -> dict[str, Any]:
    return {"request_id": f"gem-{uuid.uuid4().hex}", "team": TEAM, "feature": FEATURE,
            "model": "gemini-2.5-flash", "max_tokens": 30, "cache": {"mode": "bypass"},
            "static": {"system": SYSTEM},
            "messages": [{"role": "user", "content": f"Classify ticket {i}: late parcel"}]}


def rows(sessions: Any, **where: Any) -> list[LedgerRow]:
    with sessions() as s:
        stmt = select(LedgerRow).where(LedgerRow.team == TEAM)
        for k, v in where.items():
            stmt = stmt.where(getattr(LedgerRow, k) == v)
        return list(s.scalars(stmt.order_by(LedgerRow.id)))


def test_explicit_cache_created_past_break_even_reused_by_another_worker_billed_exactly(
        env: dict[str, str], gemini_standin: Any, sessions: Any, tmp_path: Any) -> None:
    with sessions() as s:
        set_budget(s, "team", TEAM, "total", hard=Decimal(5))
        s.commit()
    tokens = static_tokens(parse_request(ask(0)).static)
    settings = load_settings(dict(env))
    with celery_worker(env, tmp_path / "a.log", queues="interactive.api",
                       name=f"gem-a-{run_token()}", concurrency=2):
        gw = connect(settings)
        first = gw.complete(ask(0), timeout=60)
        second = gw.complete(ask(1), timeout=60)
        gw.close()
    assert first.usage.cache_read == 0  # one request in the window: below break-even
    assert second.usage.cache_read == tokens  # the second pays: worker A made the cache
    assert gemini_standin.stats()["gemini_caches"]["created"] == 1
    with celery_worker(env, tmp_path / "b.log", queues=f"interactive.api,{GOVERNOR_QUEUE}",
                       name=f"gem-b-{run_token()}", concurrency=2):
        gw = connect(settings)
        third = gw.complete(ask(2), timeout=60)
        assert third.usage.cache_read == tokens  # worker B found it through Redis
        assert gemini_standin.stats()["gemini_caches"]["created"] == 1
        time.sleep(1.5)  # no request for longer than cold_after: the prefix is cold
        gw.app.send_task(CONTEXT_CACHE_TASK, queue=GOVERNOR_QUEUE)
        deadline = time.time() + 30
        while gemini_standin.stats()["gemini_caches"]["deleted"] < 1:
            assert time.time() < deadline, "the cold cache was never deleted"
            time.sleep(0.2)
        gw.close()
    time.sleep(0.5)  # the credit row is written right after the provider's delete
    # Each request row costs its tokens, cache reads at the cached price.
    for result in (first, second, third):
        (row,) = rows(sessions, request_id=result.request_id)
        assert row.cost == cost_of(result.usage, FLASH) and row.cache_read == \
            result.usage.cache_read
    storage = rows(sessions, outcome="cache_storage")
    assert [r.feature for r in storage] == [FEATURE, FEATURE]
    create, credit = storage
    assert create.input_uncached == tokens and credit.cost < 0
    stats = gemini_standin.stats()["gemini_caches"]
    billed = create.cost + credit.cost - cost_of(Usage(input_uncached=tokens), FLASH)
    provider = (Decimal(str(stats["storage_token_seconds"])) * FLASH.price.storage_per_hour
                / 3600 / 1_000_000)
    # The worker reads its clock when the provider's answer arrives, the stand-in when it
    # acts: they differ by the milliseconds a call takes (a quarter second of storage allowed).
    quarter_second = tokens * FLASH.price.storage_per_hour / 1_000_000 / 4 / 3600
    assert abs(billed - provider) < quarter_second and billed > 0
    with sessions() as s:
        (attempt,) = s.scalars(select(AttemptRow).where(
            AttemptRow.request_id == create.request_id)).all()
        assert attempt.kind == "cache_create" and attempt.cost == create.cost
        assert attempt.settled and attempt.outcome == "ok"
        budget = get_budget(s, "team", TEAM, "total")
    assert budget is not None and budget.reserved == 0
    assert budget.spent == sum(r.cost for r in rows(sessions))


def test_a_budget_that_cannot_take_the_storage_keeps_the_prefix_on_implicit_caching(
        env: dict[str, str], gemini_standin: Any, sessions: Any, tmp_path: Any) -> None:
    team = "gemtight"
    # Room for the requests (about $0.0009 each at worst) but not for a cache's storage hold
    # on top of them (about $0.00095 to create one).
    with sessions() as s:
        set_budget(s, "team", team, "total", hard=Decimal("0.0025"))
        s.commit()
    created = gemini_standin.stats()["gemini_caches"]["created"]
    with celery_worker(env, tmp_path / "c.log", queues="interactive.api",
                       name=f"gem-c-{run_token()}", concurrency=2):
        gw = connect(load_settings(dict(env)))
        answers = [gw.complete({**ask(i), "team": team}, timeout=60) for i in range(2)]
        gw.close()
    assert [a.usage.cache_read for a in answers] == [0, 0]  # no cache: implicit only
    # The second request passed break-even: the budget refused the storage, by name.
    assert f"no explicit cache for {FEATURE}" in (tmp_path / "c.log").read_text()
    assert gemini_standin.stats()["gemini_caches"]["created"] == created
    with sessions() as s:
        found = list(s.scalars(select(LedgerRow).where(LedgerRow.team == team)))
        budget = get_budget(s, "team", team, "total")
    assert [r.outcome for r in found] == ["ok", "ok"]
    assert budget is not None and budget.reserved == 0
    assert budget.spent == sum(r.cost for r in found) <= Decimal("0.0025")
