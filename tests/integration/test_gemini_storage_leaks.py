"""Gemini explicit-cache storage the provider bills but the ledger did not (issue 16 review).

A worker creates a ``cachedContents`` entry through the money path: reservation, a ``sent``
attempt, the provider call, then the storage row and the settlement. Two ways the provider
bills and the ledger did not, on PostgreSQL and real workers:

- the creation times out (the provider had it: the cache may exist): the attempt was ended
  ``refused`` at $0 and the hold released, while the cache, whose name nobody knows, lives its
  whole TTL at the provider and is billed for it;
- the worker dies between the provider's answer and the storage row: the attempt stayed
  ``sent`` for ever, no row, and the governor keeps the reservation (its attempt is unsettled)
  for ever; nothing settled it.

Both are now charged at the hold (creation plus the whole TTL: what the provider bills for a
cache nobody deletes), marked estimated; the dead worker's by the context-cache sweep.
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
from models.db.budgets import ReservationRow, get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of, storage_cost
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.usage import Usage
from ops.bench.procs import kill9, start_worker, stop
from queues.producer import connect
from scheduler.beat import CONTEXT_CACHE_TASK, GOVERNOR_QUEUE
from tests.e2e.cli_support import sluice
from tests.services import run_token
from tests.worker_proc import celery_worker
from workers.providers.shaping import static_tokens
from workers.providers.standin import StandIn, StandInConfig

pytestmark = pytest.mark.integration
FLASH = load_catalogue().get("gemini-2.5-flash")
SYSTEM = "You sort returns for the shop. " + " ".join(
    f"Reason {i}: send it to bay {i % 5}." for i in range(260))
TTL_S = 120
#: The provider's answer to a creation comes this long after the cache exists; the worker's
#: SDK gives up after TIMEOUT_S.
CREATE_DELAY_S, TIMEOUT_S = 8.0, 3.0


@pytest.fixture(scope="module")
def slow_caches() -> Iterator[Any]:
    with StandIn(StandInConfig(gemini_implicit_ttl_s=0.0,
                               gemini_cache_create_delay_s=CREATE_DELAY_S)) as server:
        yield server


@pytest.fixture(scope="module")
def env(integration_env: dict[str, str], slow_caches: Any) -> dict[str, str]:
    prefix = f"sggst{run_token()}:"
    return {**integration_env, "SLUICE_BROKER__KEY_PREFIX": prefix,
            "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
            "SLUICE_PROVIDERS__GOOGLE_BASE_URL": slow_caches.url,
            "SLUICE_PROVIDERS__GEMINI_CACHE_TTL_S": str(TTL_S),
            "SLUICE_PROVIDERS__TIMEOUT_S": str(TIMEOUT_S),
            "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": "300"}


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def ask(team: str, i: int) -> dict[str, Any]:
    return {"request_id": f"gst-{uuid.uuid4().hex}", "team": team, "feature": "returns",
            "model": "gemini-2.5-flash", "max_tokens": 20, "cache": {"mode": "bypass"},
            "static": {"system": SYSTEM},
            "messages": [{"role": "user", "content": f"Sort return {i}: wrong size"}]}


def whole_ttl() -> Decimal:
    """What the provider bills for a cache of the prefix that nobody deletes."""
    tokens = static_tokens(parse_request(ask("x", 0)).static)
    return storage_cost(tokens, TTL_S, FLASH) + cost_of(Usage(input_uncached=tokens), FLASH)


def budget(sessions: Any, team: str) -> None:
    with sessions() as s:
        set_budget(s, "team", team, "total", hard=Decimal(5))
        s.commit()


def storage_rows(sessions: Any, team: str) -> list[LedgerRow]:
    with sessions() as s:
        return list(s.scalars(select(LedgerRow).where(LedgerRow.team == team,
                                                      LedgerRow.outcome == "cache_storage")))


def holds(sessions: Any, team: str) -> tuple[list[AttemptRow], list[ReservationRow]]:
    with sessions() as s:
        tried = list(s.scalars(select(AttemptRow).where(AttemptRow.team == team,
                                                        AttemptRow.kind == "cache_create")))
        held = list(s.scalars(select(ReservationRow).where(
            ReservationRow.request_id.in_([a.request_id for a in tried] or [""]))))
    return tried, held


def assert_charged_once(sessions: Any, team: str, standin: Any) -> None:
    (row,) = storage_rows(sessions, team)
    assert row.cost == row.estimated_cost == whole_ttl(), "storage the provider bills is missing"
    tried, held = holds(sessions, team)
    assert [(a.cost, a.billing, a.settled) for a in tried] == [(row.cost, "estimated", True)]
    assert [r.state for r in held] == ["settled"]
    with sessions() as s:
        b = get_budget(s, "team", team, "total")
        spent = sum(r.cost for r in s.scalars(select(LedgerRow).where(LedgerRow.team == team)))
        # A killed request's own reservation waits for its lease or its redelivery.
        others = sum(r.amount for r in s.scalars(select(ReservationRow).where(
            ReservationRow.state == "open", ReservationRow.budget_ids == str(b.id))))
    assert b is not None and b.reserved == others and b.spent == spent


def test_a_cache_creation_that_timed_out_is_charged_as_the_provider_bills_it(
        env: dict[str, str], slow_caches: Any, sessions: Any, tmp_path: Any) -> None:
    team = f"gto{uuid.uuid4().hex[:6]}"
    budget(sessions, team)
    created = slow_caches.stats()["gemini_caches"]["created"]
    with celery_worker(env, tmp_path / "w.log", queues="interactive.api",
                       name=f"gst-a-{run_token()}", concurrency=2):
        gw = connect(load_settings(dict(env)))
        answers = [gw.complete(ask(team, i), timeout=60) for i in range(2)]
        gw.close()
    assert [a.usage.cache_read for a in answers] == [0, 0]  # the cache's name never came back
    # The provider made it (and bills it for its TTL: nobody can delete what has no name).
    assert slow_caches.stats()["gemini_caches"]["created"] == created + 1
    assert_charged_once(sessions, team, slow_caches)
    # `sluice spend` shows the estimated part apart.
    done = sluice(["spend", "--team", team], env)
    assert done.returncode == 0, done.stderr
    assert f"estimated: ${whole_ttl():,.6f}" in done.stdout


def test_a_worker_killed_after_creating_a_cache_has_its_storage_settled_by_the_sweep(
        env: dict[str, str], slow_caches: Any, sessions: Any, tmp_path: Any) -> None:
    team = f"gkill{uuid.uuid4().hex[:6]}"
    budget(sessions, team)
    # The dead worker's call would have timed out by now: its attempt is an orphan.
    slow = {**env, "SLUICE_PROVIDERS__TIMEOUT_S": "10"}
    created = slow_caches.stats()["gemini_caches"]["created"]
    log = tmp_path / "w.log"
    first = start_worker(slow, log, queues="interactive.api", concurrency=2, name="gst-kill")
    try:
        gw = connect(load_settings(dict(slow)))
        gw.complete(ask(team, 0), timeout=60)
        gw.submit(ask(team, 1))  # past break-even: its worker creates the cache
        deadline = time.time() + 30
        while slow_caches.stats()["gemini_caches"]["created"] < created + 1:
            assert time.time() < deadline, "no cache was created"
            time.sleep(0.05)
        kill9(first)  # the provider has the cache; the worker never hears its name
        gw.close()
    finally:
        stop(first)
    tried, held = holds(sessions, team)
    assert [a.outcome for a in tried] == ["sent"] and [r.state for r in held] == ["open"]
    assert storage_rows(sessions, team) == []
    time.sleep(2 * 10 + 1)  # past the attempt's longest life (twice its SDK timeout)
    with celery_worker(slow, tmp_path / "b.log", queues=GOVERNOR_QUEUE,
                       name=f"gst-b-{run_token()}", concurrency=1):
        gw = connect(load_settings(dict(slow)))
        gw.app.send_task(CONTEXT_CACHE_TASK, queue=GOVERNOR_QUEUE)
        deadline = time.time() + 30
        while not storage_rows(sessions, team):
            assert time.time() < deadline, "the sweep never settled the dead worker's storage"
            time.sleep(0.2)
        gw.close()
    assert_charged_once(sessions, team, slow_caches)
