"""The Redis writes around the final ledger write: the stash lands before the row commits, the
cache entry before the reply, and a worker killed at its commit is billed once by the redelivery."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from models.db import ledger
from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, set_budget
from models.db.tables import LedgerRow
from models.domain.cost import prompt_for, worst_case_cost
from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import load_settings
from models.domain.tokens import count_request
from queues.envelope import Envelope, task_id_for
from workers import service
from workers.runtime import build_runtime
from workers.service import execute

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive", reason="chaos")


@pytest.fixture(scope="module")
def rt(integration_env: dict[str, str]) -> Any:
    runtime = build_runtime(load_settings(integration_env), admission=None, cache=None)
    yield runtime
    runtime.close()


def message() -> dict[str, Any]:
    req = parse_request({"request_id": f"sw-{uuid.uuid4().hex}", "team": "t", "feature": "f",
                         "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    return Envelope(request=req, route=ROUTE).to_message()


def outcome(rt: Any, rid: str) -> str | None:
    """The ledger row's outcome as another connection sees it (committed state only)."""
    with rt.session() as s:
        row = ledger.get(s, rid)
        return None if row is None else row.outcome


def chat_calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/chat/completions", 0))


class SlowStash:
    """Keeps the answer only after ``hold_s``, or as soon as the row commits without it: what
    it saw then tells whether the ledger's COMMIT waited for the stash."""

    def __init__(self, rt: Any, rid: str, hold_s: float) -> None:
        self.rt, self.rid, self.hold_s = rt, rid, hold_s
        self.seen: str | None = None
        self.record: dict[str, Any] | None = None

    def keep(self, record: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.hold_s
        while time.monotonic() < deadline and outcome(self.rt, self.rid) == "running":
            time.sleep(0.02)
        self.seen = outcome(self.rt, self.rid)
        self.record = record

    def read(self) -> dict[str, Any] | None:
        return self.record

    def set_aside_error(self) -> None:
        """Not asked here (no errored run is retried)."""


def test_the_ledger_row_commits_only_once_the_answer_is_stashed(rt: Any) -> None:
    msg = message()
    rid = msg["request"]["request_id"]
    stash = SlowStash(rt, rid, hold_s=1.0)
    reply = execute(msg, rt, stash=stash)
    assert reply["ok"], reply
    # A COMMIT that did not wait would have shown the row finished while the stash waited.
    assert stash.seen == "running"
    assert stash.record is not None and stash.record["reply"] == reply
    assert outcome(rt, rid) == "ok"


class Killed(BaseException):
    """The worker dying at its COMMIT (no handler of ours catches a BaseException)."""


def test_a_worker_killed_at_its_commit_leaves_the_answer_billed_once_by_the_redelivery(
        rt: Any, standin: Any, monkeypatch: Any) -> None:
    msg = message()
    rid = msg["request"]["request_id"]
    stash = SlowStash(rt, rid, hold_s=0.3)
    real = service.finalize

    def dies_at_commit(*args: Any, **kwargs: Any) -> bool:
        real(*args, **kwargs)
        raise Killed()

    monkeypatch.setattr(service, "finalize", dies_at_commit)
    before = chat_calls(standin)
    with pytest.raises(Killed):
        execute(msg, rt, stash=stash)
    monkeypatch.setattr(service, "finalize", real)
    assert chat_calls(standin) - before == 1
    # Nothing was billed, but the answer is kept: the stash landed before the COMMIT.
    assert outcome(rt, rid) == "running"
    assert stash.record is not None and stash.record["reply"]["ok"]
    with rt.session() as s:  # the dead run's claim lapses
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        s.execute(update(LedgerRow).where(LedgerRow.request_id == rid)
                  .values(created_at=old, heartbeat_at=old))
    reply = execute(msg, rt, stash=stash)  # the redelivery takes the claim over
    assert reply == stash.record["reply"]
    assert chat_calls(standin) - before == 1, "the redelivery paid the provider again"
    with rt.session() as s:
        row = ledger.get(s, rid)
        assert row is not None and row.outcome == "ok" and row.attempts == 1
        assert row.cost == Decimal(str(reply["result"]["cost"])) > 0


class SlowCache:
    """A response cache whose store takes a while: the reply must wait for it."""

    def __init__(self) -> None:
        self.stored: list[str] = []

    def store(self, request: Any, result: Any) -> None:
        time.sleep(0.3)
        self.stored.append(request.request_id)


class Replies:
    """A stash whose keep is where the reply goes out (workers.tasks._Stash pushes it): what
    the cache held at that moment."""

    def __init__(self, cache: SlowCache) -> None:
        self.cache = cache
        self.cached_at_reply: list[str] | None = None

    def keep(self, record: dict[str, Any]) -> None:
        self.cached_at_reply = list(self.cache.stored)

    def read(self) -> dict[str, Any] | None:
        return None


def test_the_cache_entry_is_stored_before_the_reply(rt: Any, monkeypatch: Any) -> None:
    cache = SlowCache()
    monkeypatch.setattr(rt, "cache", cache)
    msg = message()
    stash = Replies(cache)
    reply = execute(msg, rt, stash=stash)
    assert reply["ok"], reply
    # An identical request the caller sends on its answer finds the entry.
    assert stash.cached_at_reply == [msg["request"]["request_id"]]


class Forgotten:
    """An in-flight record that notes what the worker forgot."""

    def __init__(self) -> None:
        self.done_ids: list[str] = []

    def done(self, task_id: str) -> None:
        self.done_ids.append(task_id)


@pytest.fixture(scope="module")
def money_rt(integration_env: dict[str, str]) -> Any:
    """A runtime with budgets (admission on), as a worker's."""
    runtime = build_runtime(load_settings(dict(integration_env)), cache=None)
    yield runtime
    runtime.close()


def celery_task(settings: Any, task_id: str) -> Any:
    """What workers.tasks._Stash reads of its task: the real Redis result store and the
    delivery's request (its id)."""
    from celery.app.task import Context

    from queues.app import create_app

    app = create_app(settings)
    return SimpleNamespace(app=app, backend=app.backend, request=Context(id=task_id))


def test_a_worker_killed_between_its_reply_and_its_ledger_write_is_billed_once_exactly(
        money_rt: Any, standin: Any, monkeypatch: Any) -> None:
    """The reply goes out with the stash, before the final ledger write: the caller has its
    answer while the row is still running. A worker dying right then leaves the reservation
    holding the worst case (no budget can be passed), and the redelivery bills the stashed
    answer once, exactly: the attempt ends ok at its real cost, the reservation settles."""
    from workers.tasks import _Stash

    rt = money_rt
    team = f"rk-{uuid.uuid4().hex[:8]}"
    req = parse_request({"request_id": f"rk-{uuid.uuid4().hex}", "team": team, "feature": "f",
                         "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    model = rt.catalogue.get(ROUTE.model)
    worst = worst_case_cost(prompt_for(req, [model], count_request(req)), req.max_tokens, model)
    with rt.session() as s:
        set_budget(s, "team", team, "total", hard=worst * 3)
    rt.admission.invalidate()
    rid = rt.admission.reserve(req, ROUTE, worst)
    assert rid is not None
    msg = Envelope(request=req, route=ROUTE, reservation_id=rid,
                   prompt_tokens=count_request(req)).to_message()
    task = celery_task(rt.settings, task_id_for(req))
    real = service.finalize

    def dies_before_the_write(*args: Any, **kwargs: Any) -> bool:
        raise Killed()

    monkeypatch.setattr(service, "finalize", dies_before_the_write)
    before = chat_calls(standin)
    with pytest.raises(Killed):
        execute(msg, rt, stash=_Stash(task))
    monkeypatch.setattr(service, "finalize", real)
    assert chat_calls(standin) - before == 1
    # The caller was answered: the result store holds the reply (pushed with the stash).
    answered = task.app.AsyncResult(task_id_for(req)).get(timeout=5)
    assert answered["ok"] and answered["result"]["request_id"] == req.request_id
    cost = Decimal(str(answered["result"]["cost"]))
    assert cost > 0
    with rt.session() as s:  # nothing billed yet; the reservation still holds the worst case
        assert ledger.get(s, req.request_id).outcome == "running"
        held = s.scalars(select(ReservationRow).where(ReservationRow.id == rid)).one()
        assert (held.state, Decimal(held.amount)) == ("open", worst)
        budget = s.scalars(select(BudgetRow).where(BudgetRow.key == team)).one()
        assert (budget.spent, budget.reserved) == (0, worst)
        s.execute(update(LedgerRow).where(LedgerRow.request_id == req.request_id)
                  .values(created_at=datetime.now(timezone.utc) - timedelta(hours=1),
                          heartbeat_at=datetime.now(timezone.utc) - timedelta(hours=1)))
    reply = execute(msg, rt, stash=_Stash(task))  # the redelivery takes the lapsed claim over
    assert reply == answered
    assert chat_calls(standin) - before == 1, "the redelivery paid the provider again"
    with rt.session() as s:
        row = ledger.get(s, req.request_id)
        assert (row.outcome, row.cost, row.attempts, row.estimated_cost) == ("ok", cost, 1, 0)
        tried = s.scalars(select(AttemptRow).where(
            AttemptRow.request_id == req.request_id)).all()
        assert [(a.outcome, a.billing, a.cost, a.settled) for a in tried] == [
            ("ok", "exact", cost, True)]
        held = s.scalars(select(ReservationRow).where(
            ReservationRow.request_id == req.request_id)).all()
        assert [(r.id, r.state, Decimal(r.actual)) for r in held] == [(rid, "settled", cost)]
        budget = s.scalars(select(BudgetRow).where(BudgetRow.key == team)).one()
        assert (budget.spent, budget.reserved) == (cost, 0)
