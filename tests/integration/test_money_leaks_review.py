"""Reproductions from the review of issue 16's money path, on PostgreSQL and real workers.

Each fails on the code as reviewed (main at 45b9a5e) and says what money it loses.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db import ledger
from models.db.budgets import ReservationRow, set_budget
from models.domain.errors import BudgetExceeded, ValidationError
from models.domain.request import parse_request
from models.domain.result import ChatResult
from models.domain.settings import load_settings
from models.domain.tokens import count_request
from models.domain.usage import Usage
from queues.envelope import Envelope
from queues.handle import TaskHandle
from queues.producer import connect
from scheduler.route import decide_route
from tests.integration.test_money_leaks import (  # noqa: F401 - fixtures
    budget, calls, data, leak_env, leak_gateway, ledger_row, ledger_row_or_none, sessions,
    settled_spend, wait_final, worst)
from tests.services import run_token
from tests.worker_proc import celery_worker

pytestmark = pytest.mark.integration


def reservation_state(sessions: Any, rid: str) -> str:
    with sessions() as s:
        return s.get(ReservationRow, rid).state


def test_another_teams_request_id_collision_never_frees_the_owners_reservation(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Team A's request runs, holding reservation R on a feature budget both teams share.
    Team B sends the same request id: admission's ``prior`` lookup (request id + budget ids,
    not the tenant) hands B the reservation R; B's worker finds the claim foreign and
    ``_release_copy`` releases R while A's call runs. The money is free for others, and A's
    settle finds R released and spends nothing: A's billed cost never reaches the budget."""
    feature = f"coll-{uuid.uuid4().hex[:8]}"
    budget(sessions, leak_gateway, feature, Decimal(1))
    d = data(feature, model="claude-haiku-4-5", max_tokens=45, team="owner",
             messages=[{"role": "user", "content": "Write a long story " * 20}])
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    rid = leak_gateway.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req),
                   reservation_id=rid, stream=True)
    standin.script_faults(["slow=100"], path="anthropic", model="claude-haiku-4-5")
    try:
        first = TaskHandle(leak_gateway._send(env))
        deadline = time.time() + 20
        while ledger_row_or_none(sessions, req.request_id) is None:
            assert time.time() < deadline
            time.sleep(0.05)
        with pytest.raises(ValidationError):  # the other team is told to use a fresh id
            leak_gateway.complete(dict(d, team="intruder"), timeout=30)
        assert ledger_row(sessions, req.request_id).outcome == "running"
        assert reservation_state(sessions, rid) == "open", \
            "another team's request id collision released the owner's live reservation"
        result = first.result(timeout=60)
    finally:
        standin.reset()
    wait_final(sessions, req.request_id)
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (result.cost, 0), "the owner's billed cost missed the budget"


def test_a_budget_with_no_room_set_after_the_reservation_stops_it_at_the_second_check(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Sharpens test_a_budget_set_after_admission_stops_the_request_at_the_second_check (which
    passes on 51e936c: a request with no reservation was re-reserved there already). Issue 16
    item 5 is a request that *holds* a reservation: reserved on its team budget, then a
    feature budget with no room is set; the second check must refuse before sending."""
    feature = f"late3-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5", team=f"t-{feature}")
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    with sessions() as s:
        set_budget(s, "team", req.team, "total", hard=Decimal(1))
        s.commit()
    leak_gateway.admission.invalidate()
    rid = leak_gateway.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
    assert rid is not None
    budget(sessions, leak_gateway, feature, worst(d, "claude-haiku-4-5") / 2)
    time.sleep(1.2)  # the worker's budget list
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req),
                   reservation_id=rid)
    before = calls(standin, "/v1/messages")
    with pytest.raises(BudgetExceeded):
        TaskHandle(leak_gateway._send(env)).result(timeout=30)
    assert calls(standin, "/v1/messages") == before
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (0, 0)


def test_an_outbox_entry_of_the_previous_release_lands_with_its_cost(
        leak_env: dict[str, str], sessions: Any, standin: Any, tmp_path: Path) -> None:
    """Rolling deploy: a worker of the previous release kept a paid final row in its outbox
    (column ``cost`` = the amount to settle, a decimal string). The new release reads that
    column as the successful attempt's JSON: ``json.loads("0.000125")`` is a float, finalize
    indexes it and raises TypeError, which escapes ``replay`` (it catches only database
    errors) and ``execute`` (``maybe_replay`` runs outside its try): the paid row never lands,
    its reservation (no attempt rows) is freed by the governor, and the worker's tasks fail.
    Even without the TypeError, finalize would set the row's cost to the sum of its attempt
    rows: 0 for a request of the previous release."""
    prefix = f"sgob{run_token()}:"
    home = tmp_path / "home"
    env = {**leak_env, "SLUICE_HOME": str(home), "SLUICE_BROKER__KEY_PREFIX": prefix,
           "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:", "SLUICE_TEST_KEY_PREFIX": prefix}
    gw = connect(load_settings(dict(env)))
    try:
        feature = f"ob-{uuid.uuid4().hex[:8]}"
        budget(sessions, gw, feature, Decimal(1))
        d = data(feature, model="claude-haiku-4-5")
        req = parse_request(d)
        route = decide_route(req, gw.catalogue, gw.settings.routing)
        rid = gw.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
        cost = Decimal("0.000125000000")
        paid = ChatResult(request_id=req.request_id, text="paid", provider=route.provider,
                          model=route.model, route=route, usage=Usage(input_uncached=20, output=5),
                          cost=cost, price_version="old")
        # The previous release's claim (no heartbeat column written) ...
        with sessions() as s:
            ledger.record(s, dict(ledger.row_from_result(req, paid, outcome="running"),
                                  cost=Decimal(0), created_at=datetime.now(timezone.utc)))
            s.commit()
        # ... and its outbox entry, as Outbox.keep wrote it then.
        final = ledger.row_from_result(req, paid)
        final.pop("created_at")
        home.mkdir(parents=True)
        with sqlite3.connect(home / "outbox.db") as db:
            db.execute("CREATE TABLE IF NOT EXISTS pending (request_id TEXT PRIMARY KEY, "
                       "kind TEXT NOT NULL, row TEXT NOT NULL, reservation_id TEXT, "
                       "cost TEXT, kept_at REAL NOT NULL)")
            db.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                       (req.request_id, "ok", json.dumps(final, default=str), rid, str(cost),
                        time.time()))
        with celery_worker(env, tmp_path / "worker.log", queues="interactive.api,async.api",
                           name=f"outbox-{run_token()}"):
            errors = []
            for _ in range(3):  # each task replays the outbox first
                try:
                    gw.complete(data(feature, model="claude-haiku-4-5"), timeout=30)
                except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                    errors.append(repr(exc))
                time.sleep(1.1)
            deadline = time.time() + 10
            while ledger_row(sessions, req.request_id).outcome == "running":
                if time.time() > deadline:
                    break
                time.sleep(0.2)
            row = ledger_row(sessions, req.request_id)
            assert (row.outcome, row.cost) == ("ok", cost), "the old release's paid row was lost"
            with sessions() as s:
                assert s.get(ReservationRow, rid).state == "settled"
            assert not errors, f"the worker's tasks failed: {errors[:1]}"
    finally:
        gw.close()


def test_concurrent_fallbacks_never_spend_past_the_hard_limit(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Sharpens test_a_fallback_spends_only_inside_its_reservation, whose money assertion holds
    on 51e936c too (one request alone stays under a limit of 1.2 flagship worst cases). The
    leak was concurrency: each request reserved the cheap model's worst case, so many were
    admitted together and each fallback spent at the flagship's price, past the limit."""
    feature = f"fb3-{uuid.uuid4().hex[:8]}"
    probe = data(feature, model="gpt-4o-mini")
    hard = worst(probe, "gpt-4o") * Decimal("1.2")
    budget(sessions, leak_gateway, feature, hard)
    standin.script_faults(["500"] * 3 * 6, path="openai", model="gpt-4o-mini")
    handles, refused = [], 0
    try:
        for _ in range(6):
            try:
                handles.append(leak_gateway.submit(data(feature, model="gpt-4o-mini")))
            except BudgetExceeded:
                refused += 1
        results = [h.result(timeout=60) for h in handles]
    finally:
        standin.reset()
    for r in results:
        wait_final(sessions, r.request_id)
    spent, reserved, limit = settled_spend(sessions, feature)
    assert spent <= limit, f"{len(results)} fallbacks spent {spent} past the hard limit {limit}"
    assert reserved == 0 and refused >= 1


def test_a_retry_sent_while_the_first_runs_holds_no_second_reservation(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Sharpens test_a_retry_under_the_same_request_id_holds_one_reservation, whose retry
    arrives after the first finished (it tests the release of a finished request's copy, not
    the ``prior`` reuse): here the SDK retries while the first call still runs."""
    feature = f"same2-{uuid.uuid4().hex[:8]}"
    budget(sessions, leak_gateway, feature, Decimal(1))
    d = data(feature, model="claude-haiku-4-5", max_tokens=40,
             messages=[{"role": "user", "content": "Write a long story " * 20}])
    w = worst(d, "claude-haiku-4-5")
    before = calls(standin, "/v1/messages")
    standin.script_faults(["slow=100"], path="anthropic", model="claude-haiku-4-5")
    try:
        first = leak_gateway.submit(d, stream=True)
        deadline = time.time() + 20
        while ledger_row_or_none(sessions, d["request_id"]) is None:
            assert time.time() < deadline
            time.sleep(0.05)
        again = leak_gateway.submit(d)
        _, reserved, _ = settled_spend(sessions, feature)
        assert reserved == w, f"the retry holds a second reservation: {reserved} for {w}"
        a, b = first.result(timeout=60), again.result(timeout=60)
        assert a.text == b.text and calls(standin, "/v1/messages") - before == 1
    finally:
        standin.reset()
    wait_final(sessions, d["request_id"])
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (a.cost, 0)


def test_a_retry_whose_publish_fails_never_frees_the_first_runs_reservation(
        leak_gateway: Any, sessions: Any, standin: Any, monkeypatch: Any) -> None:
    """Same team, same request id: the SDK retries while the first call runs, and the broker
    refuses the retry's publish (the moment clients retry most). Admission handed the retry
    the first run's reservation (``prior``); ``_dispatch`` releases "its" reservation on the
    publish error: the first run's. Its money is free for others mid-call, and its settle
    finds the reservation released and spends nothing on the budget."""
    from kombu.exceptions import OperationalError

    from models.domain.errors import BrokerError

    feature = f"pub-{uuid.uuid4().hex[:8]}"
    budget(sessions, leak_gateway, feature, Decimal(1))
    d = data(feature, model="claude-haiku-4-5", max_tokens=40,
             messages=[{"role": "user", "content": "Write a long story " * 20}])
    standin.script_faults(["slow=100"], path="anthropic", model="claude-haiku-4-5")
    try:
        first = leak_gateway.submit(d, stream=True)
        deadline = time.time() + 20
        while ledger_row_or_none(sessions, d["request_id"]) is None:
            assert time.time() < deadline
            time.sleep(0.05)
        with sessions() as s:
            (rid,) = s.scalars(select(ReservationRow.id).where(
                ReservationRow.request_id == d["request_id"])).all()

        def refused(*_a: Any, **_k: Any) -> Any:
            raise OperationalError("broker away (injected)")

        with monkeypatch.context() as m:
            m.setattr(leak_gateway.app, "send_task", refused)
            with pytest.raises(BrokerError):
                leak_gateway.submit(d)
        assert reservation_state(sessions, rid) == "open", \
            "a failed retry released the first run's live reservation"
        result = first.result(timeout=60)
    finally:
        standin.reset()
    wait_final(sessions, d["request_id"])
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (result.cost, 0), "the first run's billed cost missed the budget"


def test_a_settle_across_a_window_rollover_finishes(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """A daily budget's window ends while the call runs. The final write's settle locks the
    listed budget rows (change_budgets), then ``_unlisted`` -> ``_ids`` sees the ended window
    and ``_roll``s it in a second transaction, whose UPDATE waits for the first one's row
    lock: the worker thread waits on itself, holding the reservation and budget rows (every
    reservation on that budget, and the worker's heartbeat, then block behind it)."""
    from sqlalchemy import text

    feature = f"roll-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "feature", feature, "daily", hard=Decimal(1))
        s.commit()
    leak_gateway.admission.invalidate()
    d = data(feature, model="claude-haiku-4-5", max_tokens=30,
             messages=[{"role": "user", "content": "Write a long story " * 20}])
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    rid = leak_gateway.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
    # The window ends 2 s from now: after the worker's second check, before its settle.
    with sessions() as s:
        s.execute(text("UPDATE budgets SET resets_at = now() + interval '2 seconds' "
                       "WHERE scope = 'feature' AND key = :k"), {"k": feature})
        s.commit()
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req),
                   reservation_id=rid, stream=True)
    standin.script_faults(["slow=100"], path="anthropic", model="claude-haiku-4-5")
    try:
        handle = TaskHandle(leak_gateway._send(env))
        try:
            handle.result(timeout=30)
        except Exception as exc:  # noqa: BLE001 - say what the database was doing
            with sessions() as s:
                waiting = s.execute(text(
                    "SELECT left(query, 60) FROM pg_stat_activity WHERE wait_event_type = "
                    "'Lock' AND datname = current_database()")).scalars().all()
            pytest.fail(f"the request never finished ({exc!r}); waiting on locks: {waiting}")
    finally:
        standin.reset()
    assert reservation_state(sessions, rid) == "settled"
