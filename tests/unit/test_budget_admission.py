"""SqlAdmission against the pure budget model: reserve, settle, release, expire, on real SQL.

The embedded SQLite ledger runs here; tests/integration/test_budget_pg.py runs the same state
machine on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text, update

from models.db.budgets import ReservationRow, list_budgets, set_budget
from models.db.engine import make_engine, session_factory
from models.domain.budget import Budget, applicable, release_one, reserve_all, settle_one
from models.domain.errors import BudgetExceeded
from models.domain.request import parse_request
from models.domain.result import Route
from scheduler import governor
from scheduler.admission import SqlAdmission

LIMITS = {("org", "o1"): "1.0", ("team", "t1"): "0.5", ("feature", "f1"): "0.3",
          ("user", "u1"): "0.25", ("lane", "async"): "0.6"}
amounts = st.integers(min_value=0, max_value=150_000).map(lambda n: Decimal(n) / 1_000_000)


def reset_budgets(sessions: Any) -> None:
    """Empty the budget tables and create the LIMITS budgets (total window)."""
    with sessions() as s:
        for t in ("budget_alerts", "pauses", "reservations", "budgets"):
            s.execute(text(f"DELETE FROM {t}"))
        for (scope, key), hard in LIMITS.items():
            # Org o1's own budgets, and a deployment-wide lane budget (no org).
            set_budget(s, scope, key, "total", hard=Decimal(hard),
                       org=None if scope in ("org", "lane") else "o1")
        s.commit()


def machine_for(sessions: Any) -> type[RuleBasedStateMachine]:
    """A state machine checking SqlAdmission on ``sessions`` against the pure model."""

    class AdmissionMachine(RuleBasedStateMachine):
        reservations = Bundle("reservations")

        def __init__(self) -> None:
            super().__init__()
            reset_budgets(sessions)
            self.adm = SqlAdmission(sessions, lease_s={"interactive": 60, "async": 60})
            with sessions() as s:
                self.model: dict[int, Budget] = {b.id: b for b in list_budgets(s)}
            self.held: dict[str, tuple[Decimal, list[int], str]] = {}
            self.late: dict[int, Decimal] = {}

        def teardown(self) -> None:
            self.adm.close()

        @rule(target=reservations, org=st.sampled_from(["o1", "o1", "o2"]),
              team=st.sampled_from(["t1", "t2"]),
              feature=st.sampled_from(["f1", "f2"]), user=st.sampled_from([None, "u1"]),
              lane=st.sampled_from(["interactive", "async"]), amount=amounts,
              edge=st.sampled_from([None, None, -1, 0, 1]))
        def reserve(self, org: str, team: str, feature: str, user: str | None, lane: str,
                    amount: Decimal, edge: int | None) -> Any:
            req = parse_request({"org": org, "team": team, "feature": feature, "user": user,
                                 "lane": lane, "messages": [{"role": "user", "content": "x"}]})
            route = Route(tier="cheap", model="m", provider="openai", backend="api", lane=lane)
            apply = applicable(list(self.model.values()), req)
            if not apply:  # org o2 has no budgets of its own, whatever its names
                assert self.adm.reserve(req, route, amount) is None
                return None
            if edge is not None:
                # The boundary: exactly the smallest room left, or a millionth either side.
                room = min(b.room for b in apply)
                amount = max(room + Decimal(edge) / 1_000_000, Decimal(0))
            try:
                expected = reserve_all(apply, amount)
            except BudgetExceeded as want:
                with pytest.raises(BudgetExceeded) as got:
                    self.adm.reserve(req, route, amount)
                assert got.value.details["budget"] == want.details["budget"]
                return None
            rid = self.adm.reserve(req, route, amount)
            assert rid is not None
            for b in expected:
                self.model[b.id] = b
            self.held[rid] = (amount, [b.id for b in expected], "open")
            return rid

        @rule(rid=consumes(reservations), share=st.integers(min_value=0, max_value=100))
        def settle(self, rid: str | None, share: int) -> None:
            if rid is None:
                return
            amount, ids, state = self.held.pop(rid)
            # Costs come in whole pico-dollars here: the stores keep 12 places.
            actual = Decimal(int(amount * 10**12) * share // 100) / 10**12
            assert self.adm.settle(rid, actual) is (state in ("open", "expired"))
            if state in ("open", "expired"):
                for i in ids:
                    self.model[i] = settle_one(self.model[i], amount, actual,
                                               held=state == "open")
                    if state == "expired":
                        # A late settle records what was really spent, on top of room that
                        # was already given back: the one way past the limit (see expire).
                        self.late[i] = self.late.get(i, Decimal(0)) + actual
            assert self.adm.settle(rid, actual) is False  # exactly once
            assert self.adm.release(rid) is False

        @rule(rid=consumes(reservations))
        def release(self, rid: str | None) -> None:
            if rid is None:
                return
            amount, ids, state = self.held.pop(rid)
            assert self.adm.release(rid) is (state == "open")
            if state == "open":
                for i in ids:
                    self.model[i] = release_one(self.model[i], amount)
            assert self.adm.release(rid) is False

        @rule(rid=reservations)
        def expire(self, rid: str | None) -> None:
            # In production a reservation expires only after the lane's hard time limit (plus a
            # margin) from when its worker started, so a live worker never settles late; here
            # the clock is forced, to check the late path stays exact too.
            if rid is None or self.held[rid][2] != "open":
                return
            amount, ids, _ = self.held[rid]
            past = datetime.now(timezone.utc) - timedelta(seconds=1)
            with sessions() as s:
                s.execute(update(ReservationRow).where(ReservationRow.id == rid)
                          .values(expires_at=past))
                assert governor.release_expired(s, datetime.now(timezone.utc)) == 1
                s.commit()
            self.held[rid] = (amount, ids, "expired")
            for i in ids:
                self.model[i] = release_one(self.model[i], amount)

        @invariant()
        def database_matches_model(self) -> None:
            with sessions() as s:
                stored = {b.id: b for b in list_budgets(s)}
            for bid, b in self.model.items():
                got = stored[bid]
                assert (got.spent, got.reserved) == (b.spent, b.reserved), b.name
                assert got.reserved >= 0 and got.spent >= 0
                assert got.spent + got.reserved <= got.hard_limit + self.late.get(bid, 0)

    return AdmissionMachine


@pytest.fixture(scope="module")
def sqlite_sessions(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ops.db import upgrade

    url = f"sqlite:///{Path(tmp_path_factory.mktemp('budget')) / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def test_admission_matches_the_model_on_sqlite(sqlite_sessions: Any) -> None:
    run_state_machine_as_test(machine_for(sqlite_sessions),
                              settings=settings(max_examples=25, stateful_step_count=30,
                                                deadline=None))


def test_refusal_carries_the_numbers_it_was_refused_on(sqlite_sessions: Any) -> None:
    reset_budgets(sqlite_sessions)
    adm = SqlAdmission(sqlite_sessions, lease_s={"interactive": 60})
    req = parse_request({"org": "o1", "team": "t9", "feature": "f1",
                         "messages": [{"role": "user", "content": "x"}]})
    route = Route(tier="cheap", model="m", provider="openai", backend="api", lane="interactive")
    first = adm.reserve(req, route, Decimal("0.2"))
    assert first is not None
    other = req.model_copy(update={"request_id": "second"})
    with pytest.raises(BudgetExceeded) as err:
        adm.reserve(other, route, Decimal("0.15"))
    d = err.value.details
    assert d["budget"] == "o1/feature:f1:total" and d["reserved"] == "0.2" \
        and d["limit"] == "0.3"
    assert Decimal(d["spent"]) + Decimal(d["reserved"]) + Decimal(d["requested"]) \
        > Decimal(d["limit"])
    # The refused request left no trace: every budget holds only the first reservation.
    with sqlite_sessions() as s:
        assert {b.name: b.reserved for b in list_budgets(s) if b.reserved} == {
            "org:o1:total": Decimal("0.2"), "o1/feature:f1:total": Decimal("0.2")}
    assert adm.reserve(other, route, Decimal("0.1")) is not None  # exactly the room left fits
    nobody = req.model_copy(update={"feature": "f7", "org": "nobody"})
    assert adm.reserve(nobody, route, Decimal(5)) is None  # no budget applies: nothing held
