"""A reservation whose lease lapses between the worker's second check and the provider call:
the governor frees the money and others take it; nothing may be sent outside a reservation."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from models.db import ledger
from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, set_budget
from models.domain.cost import prompt_for, worst_case_cost
from models.domain.request import parse_request
from models.domain.result import ChatResult, Route
from models.domain.settings import load_settings
from models.domain.tokens import count_request
from queues.envelope import Envelope
from scheduler import governor
from workers.runtime import build_runtime
from workers.service import execute

pytestmark = pytest.mark.integration
ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive", reason="lapse")


@pytest.fixture(scope="module")
def rt(integration_env: dict[str, str]) -> Any:
    runtime = build_runtime(load_settings(dict(integration_env)))
    yield runtime
    runtime.close()


def request(team: str) -> Any:
    return parse_request({"request_id": f"lapse-{uuid.uuid4().hex}", "team": team,
                          "feature": "f", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hi"}]})


def held_with_room(rt: Any) -> tuple[str, Any, str]:
    """A fresh team with a budget of three worst cases and one request held under it."""
    team = f"lapse-{uuid.uuid4().hex[:8]}"
    first = request(team)
    model = rt.catalogue.get(ROUTE.model)
    worst = worst_case_cost(prompt_for(first, [model], count_request(first)),
                            first.max_tokens, model)
    with rt.session() as s:
        set_budget(s, "team", team, "total", hard=worst * 3)
    rt.admission.invalidate()
    rid = rt.admission.reserve(first, ROUTE, worst)
    assert rid is not None
    return team, first, rid


def openai_calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/chat/completions", 0))


def lapse_before_the_first_attempt(rt: Any, rid: str, then: Any) -> Any:
    """Wrap the attempt writer: right before it, the lease of ``rid`` lapses, the governor
    frees it, and ``then()`` runs (another request reserving the freed money)."""
    original = rt.begin_attempt
    fired = []

    def wrapped(values: dict[str, Any], *args: Any, **kw: Any) -> Any:
        if not fired:
            fired.append(True)
            past = datetime.now(timezone.utc) - timedelta(seconds=1)
            # One transaction: the run's heartbeat must not renew it in between.
            with rt.session() as s:
                s.execute(update(ReservationRow).where(ReservationRow.id == rid)
                          .values(expires_at=past))
                assert governor.release_expired(s, datetime.now(timezone.utc)) >= 1
            then()
        return original(values, *args, **kw)

    return wrapped


def test_a_lease_lapsing_before_the_call_is_held_again_or_refused_never_spent_outside(
        rt: Any, standin: Any, monkeypatch: Any) -> None:
    team = f"lapse-{uuid.uuid4().hex[:8]}"
    first, other = request(team), request(team)
    model = rt.catalogue.get(ROUTE.model)
    worst = worst_case_cost(prompt_for(first, [model], count_request(first)),
                            first.max_tokens, model)
    with rt.session() as s:
        set_budget(s, "team", team, "total", hard=worst)  # room for exactly one request
    rt.admission.invalidate()
    rid = rt.admission.reserve(first, ROUTE, worst)
    assert rid is not None
    taken: list[str | None] = []
    monkeypatch.setattr(rt, "begin_attempt", lapse_before_the_first_attempt(
        rt, rid, lambda: taken.append(rt.admission.reserve(other, ROUTE, worst))))
    before = openai_calls(standin)
    msg = Envelope(request=first, route=ROUTE, reservation_id=rid,
                   prompt_tokens=count_request(first)).to_message()
    reply = execute(msg, rt)
    assert taken and taken[0] is not None  # the freed money went to the other request
    assert not reply["ok"] and reply["error"]["code"] == "budget_exceeded", reply
    assert openai_calls(standin) == before  # nothing was sent
    with rt.session() as s:
        budget = s.scalars(select(BudgetRow).where(BudgetRow.key == team)).one()
        assert budget.spent + budget.reserved <= budget.hard_limit
        sent = s.scalars(select(AttemptRow).where(
            AttemptRow.request_id == first.request_id)).all()
    assert sent == []


def test_a_lapsed_lease_with_room_left_is_held_again_and_the_call_settles_inside_it(
        rt: Any, standin: Any, monkeypatch: Any) -> None:
    team, first, rid = held_with_room(rt)
    monkeypatch.setattr(rt, "begin_attempt",
                        lapse_before_the_first_attempt(rt, rid, lambda: None))
    msg = Envelope(request=first, route=ROUTE, reservation_id=rid,
                   prompt_tokens=count_request(first)).to_message()
    reply = execute(msg, rt)
    assert reply["ok"], reply
    with rt.session() as s:
        held = s.scalars(select(ReservationRow).where(
            ReservationRow.request_id == first.request_id)).all()
        budget = s.scalars(select(BudgetRow).where(BudgetRow.key == team)).one()
    states = sorted(r.state for r in held)
    # The lapsed one was freed by the governor; the call went out under a new one, settled.
    assert states == ["expired", "settled"], states
    settled = next(r for r in held if r.state == "settled")
    assert settled.id != rid and Decimal(settled.actual) == budget.spent > 0
    assert budget.reserved == 0


def test_spend_settled_against_a_reservation_closed_meanwhile_still_reaches_the_budget(
        rt: Any, monkeypatch: Any) -> None:
    # The hold is closed while the call runs (a takeover released a hold a dead run re-made
    # after a lapse): the answer was paid for, so the budget is charged all the same.
    team, first, rid = held_with_room(rt)
    original = rt.begin_attempt

    def then_closed(values: dict[str, Any], *args: Any, **kw: Any) -> Any:
        out = original(values, *args, **kw)
        rt.admission.release(rid)
        return out

    monkeypatch.setattr(rt, "begin_attempt", then_closed)
    msg = Envelope(request=first, route=ROUTE, reservation_id=rid,
                   prompt_tokens=count_request(first)).to_message()
    reply = execute(msg, rt)
    assert reply["ok"], reply
    with rt.session() as s:
        budget = s.scalars(select(BudgetRow).where(BudgetRow.key == team)).one()
        cost = sum(Decimal(a.cost or 0) for a in s.scalars(select(AttemptRow).where(
            AttemptRow.request_id == first.request_id)))
    assert cost > 0 and budget.spent == cost and budget.reserved == 0


class KeptAnswer:
    """A stash holding what a dead run kept before its ledger write."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def keep(self, record: dict[str, Any]) -> None:
        self.record = record

    def read(self) -> dict[str, Any] | None:
        return self.record


def test_the_hold_a_dead_runs_stashed_answer_names_is_settled_not_freed_first(
        rt: Any, monkeypatch: Any) -> None:
    # The dead run's lease lapsed, it held the request again and stashed that hold with its
    # answer, then died before its ledger write. The run taking over bills the answer against
    # that hold: freed first, as other runs' leftovers are, its money was free for others
    # until the settle found it closed and charged the budgets regardless.
    from queues.envelope import ok_reply

    team, first, lapsed = held_with_room(rt)
    with rt.session() as s:
        s.execute(update(ReservationRow).where(ReservationRow.id == lapsed)
                  .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        assert governor.release_expired(s, datetime.now(timezone.utc)) >= 1
    rt.admission.invalidate()
    model = rt.catalogue.get(ROUTE.model)
    held = rt.admission.reserve(first, ROUTE, worst_case_cost(
        prompt_for(first, [model], count_request(first)), first.max_tokens, model))
    assert held is not None
    donor = execute(Envelope(request=request(team), route=ROUTE,
                             prompt_tokens=count_request(first)).to_message(), rt)
    assert donor["ok"], donor
    answer = ChatResult.model_validate(donor["result"]).model_copy(
        update={"request_id": first.request_id})
    claim = ledger.row_from_result(first, answer, outcome="running",
                                   now=datetime.now(timezone.utc) - timedelta(hours=1))
    claim.update(cost=Decimal(0), baseline_cost=Decimal(0), list_cost=Decimal(0))
    with rt.session() as s:  # the dead run's claim, long expired, nothing billed yet
        assert ledger.record(s, claim)
        s.commit()
    msg = Envelope(request=first, route=ROUTE, reservation_id=lapsed,
                   prompt_tokens=count_request(first)).to_message()
    reply = execute(msg, rt, stash=KeptAnswer({"reply": ok_reply(answer),
                                              "reservation_id": held}))
    assert reply["ok"], reply
    with rt.session() as s:
        state = s.scalars(select(ReservationRow.state).where(ReservationRow.id == held)).one()
    assert state == "settled", state
