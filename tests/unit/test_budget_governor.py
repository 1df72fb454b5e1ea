"""The governor on the embedded SQLite ledger: pauses, consumer sync, rollover, worker hooks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from models.db.budgets import get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.domain.errors import BudgetExceeded, QueuePaused
from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import Settings
from scheduler import governor
from scheduler.admission import build_admission
from scheduler.beat import GOVERNOR_QUEUE, TICK_TASK, beat_schedule
from scheduler.governor import PAUSE_COMMAND, RESUME_COMMAND, build_pause_book

QUEUES = ("interactive.api", "interactive.gpu", "async.api", "async.gpu")
ROUTE = Route(tier="cheap", model="m", provider="openai", backend="api", lane="async")


class Control:
    """Records what would be broadcast to the workers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def cancel_consumer(self, queue: str) -> None:
        self.sent.append(("cancel_consumer", queue))

    def broadcast(self, command: str, arguments: dict[str, Any]) -> None:
        self.sent.append((command, arguments["queues"]))


@pytest.fixture()
def sessions(tmp_path: Path) -> Any:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def _req(**kw: Any) -> Any:
    return parse_request({"team": "t", "feature": "f", "lane": "async",
                          "messages": [{"role": "user", "content": "x"}], **kw})


def test_operator_pause_is_durable_broadcast_and_resumed(sessions: Any) -> None:
    control = Control()
    assert governor.pause(sessions, ["async.api"], "operator: deploy", control=control) \
        == ["async.api"]
    assert governor.pause(sessions, ["async.api"], "again", control=control) == []
    assert control.sent[0] == ("cancel_consumer", "async.api")
    book = build_pause_book(Settings(), sessions)
    assert book.paused("async.api") == "operator: deploy" and book.paused("async.gpu") is None
    governor.tick(sessions, control=control, queues=QUEUES, post=None)
    assert (PAUSE_COMMAND, ["async.api"]) in control.sent
    assert (RESUME_COMMAND, ["interactive.api", "interactive.gpu", "async.gpu"]) in control.sent
    assert governor.resume(sessions, ["async.api"], control=control) == ["async.api"]
    assert control.sent[-1] == (RESUME_COMMAND, ["async.api"])
    book.invalidate()
    assert book.paused("async.api") is None


def test_lane_budget_pauses_its_queues_and_worker_check_refuses(sessions: Any) -> None:
    with sessions() as s:
        set_budget(s, "lane", "async", "daily", hard=Decimal("0.01"))
        set_budget(s, "feature", "f", "daily", hard=Decimal("1"))
        s.commit()
    adm = build_admission(Settings(), sessions)
    rid = adm.reserve(_req(), ROUTE, Decimal("0.008"))
    with pytest.raises(BudgetExceeded):
        adm.reserve(_req(), ROUTE, Decimal("0.005"))
    with sessions() as s:
        assert sorted(governor.paused_queues(s)) == ["async.api", "async.gpu"]
        reasons = governor.paused_queues(s)["async.api"][0]
    assert "lane:async:daily" in reasons and "sluice queues resume" in reasons
    # The already queued request is refused by the worker's second check.
    with pytest.raises(QueuePaused):
        adm.confirm(_req(), ROUTE, rid, Decimal("0.008"))
    # The day ends: the tick rolls the window and lifts the budget's pause.
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1, minutes=1)
    report = governor.tick(sessions, now=tomorrow, post=None)
    assert report["rolled"] == 2 and report["resumed"] == 2 and report["paused"] == 0


def test_feature_budget_never_pauses(sessions: Any) -> None:
    with sessions() as s:
        set_budget(s, "feature", "f", "daily", hard=Decimal("0.001"))
        s.commit()
    adm = build_admission(Settings(), sessions)
    with pytest.raises(BudgetExceeded):
        adm.reserve(_req(), ROUTE, Decimal("0.002"))
    with sessions() as s:
        assert governor.paused_queues(s) == {}
        assert s.execute(text("SELECT kind FROM budget_alerts")).scalars().all() == ["hard"]


def test_confirm_refuses_after_a_limit_is_lowered_below_commitments(sessions: Any) -> None:
    with sessions() as s:
        set_budget(s, "team", "t", "monthly", hard=Decimal("1"))
        s.commit()
    adm = build_admission(Settings(), sessions)
    rid = adm.reserve(_req(lane="interactive"), ROUTE, Decimal("0.5"))
    assert adm.confirm(_req(), ROUTE, rid, Decimal("0.5")) == rid  # still held: go ahead
    with sessions() as s:
        set_budget(s, "team", "t", "monthly", hard=Decimal("0.1"))  # the emergency stop
        s.commit()
    with pytest.raises(BudgetExceeded):
        adm.confirm(_req(), ROUTE, rid, Decimal("0.5"))
    assert adm.release(rid)
    with sessions() as s:
        assert get_budget(s, "team", "t", "monthly").reserved == 0


def test_new_budget_counts_the_ledger_spend_of_its_window(sessions: Any) -> None:
    from models.db import ledger
    from models.domain.result import ChatResult

    req = _req()
    result = ChatResult(request_id=req.request_id, text="x", provider="openai", model="m",
                        route=ROUTE, cost=Decimal("0.25"))
    with sessions() as s:
        ledger.record(s, ledger.row_from_result(req, result))
        b = set_budget(s, "feature", "f", "daily", hard=Decimal(1))
        s.commit()
    assert b.spent == Decimal("0.25")


class FakeTaskConsumer:
    def __init__(self, names: set[str]) -> None:
        self.names = set(names)

    @property
    def queues(self) -> list[Any]:
        return [type("Q", (), {"name": n})() for n in sorted(self.names)]

    def consuming_from(self, name: str) -> bool:
        return name in self.names


class FakeConsumer:
    def __init__(self, names: set[str]) -> None:
        self.task_consumer = FakeTaskConsumer(names)

    def add_task_queue(self, name: str) -> None:
        self.task_consumer.names.add(name)

    def cancel_task_queue(self, name: str) -> None:
        self.task_consumer.names.discard(name)

    def call_soon(self, fn: Any, *args: Any) -> None:
        fn(*args)


def test_worker_hooks_keep_each_worker_on_its_own_queues() -> None:
    from workers.governor_tasks import honour_pauses, sluice_pause_queues, sluice_resume_queues

    api = FakeConsumer({"interactive.api", "async.api"})
    assert honour_pauses(api, {"async.api", "async.gpu"}) == ["async.api"]
    assert api.task_consumer.names == {"interactive.api", GOVERNOR_QUEUE}
    state = type("State", (), {"consumer": api})()
    sluice_pause_queues(state, queues=["interactive.api", GOVERNOR_QUEUE])
    assert api.task_consumer.names == {GOVERNOR_QUEUE}  # the governor queue is never paused
    sluice_resume_queues(state, queues=list(QUEUES))
    assert api.task_consumer.names == {"interactive.api", "async.api", GOVERNOR_QUEUE}


def test_beat_schedule_routes_the_tick_to_the_governor_queue() -> None:
    entry = beat_schedule(Settings())["sluice-governor-tick"]
    assert entry["task"] == TICK_TASK and entry["options"]["queue"] == GOVERNOR_QUEUE
    from queues.app import celery_config

    assert celery_config(Settings())["beat_schedule"]["sluice-governor-tick"] == entry
