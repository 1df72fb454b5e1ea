"""Budget arithmetic: windows, applicability, refusals, and reserve → settle invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.domain.budget import (
    Budget,
    applicable,
    check_scope,
    parse_soft,
    parse_usd,
    pause_queues,
    plain,
    refusal,
    release_one,
    reserve_all,
    rolled,
    settle_one,
    window_bounds,
)
from models.domain.errors import BudgetExceeded, ValidationError
from models.domain.request import parse_request

UTC = timezone.utc
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.just(UTC))
micro = st.integers(min_value=0, max_value=500_000).map(lambda n: Decimal(n) / 1_000_000)


def _req(**kw: object) -> object:
    base = {"team": "t1", "feature": "f1", "messages": [{"role": "user", "content": "hi"}]}
    return parse_request({**base, **kw})


@given(moments, st.sampled_from(["hourly", "daily", "monthly"]))
def test_window_holds_now_and_resets_after_it(now: datetime, window: str) -> None:
    start, resets = window_bounds(window, now)
    assert resets is not None and start <= now < resets
    # The next window starts exactly where this one ends.
    assert window_bounds(window, resets)[0] == resets


def test_window_edges() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert window_bounds("monthly", now) == (datetime(2026, 12, 1, tzinfo=UTC),
                                             datetime(2027, 1, 1, tzinfo=UTC))
    assert window_bounds("daily", now)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert window_bounds("hourly", now)[0] == datetime(2026, 12, 31, 23, tzinfo=UTC)
    assert window_bounds("total", now)[1] is None
    with pytest.raises(ValidationError):
        window_bounds("weekly", now)


def test_rollover_restarts_spend_but_keeps_reservations() -> None:
    start, resets = window_bounds("hourly", datetime(2026, 5, 1, 10, 30, tzinfo=UTC))
    b = Budget("team", "t1", "hourly", Decimal(1), spent=Decimal("0.9"),
               reserved=Decimal("0.05"), window_start=start, resets_at=resets)
    assert rolled(b, resets - timedelta(seconds=1)) is b
    after = rolled(b, resets + timedelta(minutes=5))
    assert (after.spent, after.reserved) == (Decimal(0), Decimal("0.05"))
    assert after.window_start == resets and after.resets_at == resets + timedelta(hours=1)


def test_which_budgets_apply() -> None:
    budgets = [Budget("feature", "f1", "daily", Decimal(1), id=1),
               Budget("org", "default", "monthly", Decimal(9), id=2),
               Budget("team", "t2", "daily", Decimal(1), id=3),
               Budget("user", "u1", "daily", Decimal(1), id=4),
               Budget("lane", "interactive", "hourly", Decimal(1), id=5)]
    got = [b.id for b in applicable(budgets, _req())]
    assert got == [2, 5, 1]  # widest first; no user on the request, other team
    assert [b.id for b in applicable(budgets, _req(user="u1", lane="async"))] == [2, 1, 4]


def test_which_budgets_apply_is_scoped_by_org() -> None:
    acme = [Budget("team", "catalog", "daily", Decimal(1), id=1, org="acme"),
            Budget("feature", "f1", "daily", Decimal(1), id=2, org="acme"),
            Budget("org", "acme", "daily", Decimal(1), id=3),
            Budget("lane", "interactive", "daily", Decimal(1), id=4, org="acme")]
    deployment = Budget("lane", "interactive", "daily", Decimal(1), id=5)
    other = _req(team="catalog").model_copy(update={"org": "globex"})
    # Same team, feature and lane names in another org: none of acme's budgets apply there;
    # the deployment-wide lane budget applies to both.
    assert [b.id for b in applicable([*acme, deployment], other)] == [5]
    mine = other.model_copy(update={"org": "acme"})
    assert [b.id for b in applicable([*acme, deployment], mine)] == [3, 4, 5, 1, 2]


def test_pausing_scopes() -> None:
    # Only a deployment-wide lane budget pauses the queues every org shares.
    assert pause_queues(Budget("lane", "async", "daily", Decimal(1))) == ("async.api",
                                                                           "async.gpu")
    assert pause_queues(Budget("lane", "async", "daily", Decimal(1), org="acme")) == ()
    assert pause_queues(Budget("org", "acme", "daily", Decimal(1))) == ()
    assert pause_queues(Budget("feature", "f1", "daily", Decimal(1))) == ()
    assert pause_queues(Budget("team", "t", "daily", Decimal(1))) == ()


def test_budget_names_and_orgs() -> None:
    assert Budget("team", "t", "daily", Decimal(1)).name == "team:t:daily"
    assert Budget("team", "t", "daily", Decimal(1), org="acme").name == "acme/team:t:daily"
    assert Budget("org", "acme", "daily", Decimal(1), org="x").org == "acme"
    assert Budget("lane", "async", "daily", Decimal(1)).name == "lane:async:daily"
    assert Budget("lane", "async", "daily", Decimal(1), org="acme").name == \
        "acme/lane:async:daily"
    err = refusal(Budget("team", "t", "daily", Decimal(1), org="acme", id=3), Decimal(2))
    assert "--org acme" in err.message and err.details["org"] == "acme"
    for scope, key, org in (("team", "t", "*"), ("org", "acme", "globex"),
                            ("feature", "f", "a b")):
        with pytest.raises(ValidationError) as exc:
            check_scope(scope, key, org)
        assert exc.value.field == "org"
    check_scope("lane", "async", "*")
    check_scope("team", "t", "acme")


def test_refusal_names_budget_numbers_and_reset() -> None:
    b = Budget("team", "search", "daily", Decimal("10"), spent=Decimal("9.5"),
               reserved=Decimal("0.4"), resets_at=datetime(2026, 11, 28, tzinfo=UTC), id=7)
    err = refusal(b, Decimal("0.2"))
    assert isinstance(err, BudgetExceeded)
    for part in ("team:search:daily", "$10.000000", "$9.500000", "$0.400000", "2026-11-28",
                 "sluice budget set team search --window daily"):
        assert part in err.message
    assert err.details["limit"] == "10" and err.details["reserved"] == "0.4"
    assert "never resets" in refusal(replace(b, resets_at=None), Decimal(1)).message


def test_money_parsing() -> None:
    assert parse_usd("$1,250.50") == Decimal("1250.50")
    assert parse_soft("80%", Decimal(10)) == Decimal(8)
    assert parse_soft("2.5", Decimal(10)) == Decimal("2.5")
    assert parse_soft(None, Decimal(10)) is None
    for bad in ("-1", "abc", "nan", "inf"):
        with pytest.raises(ValidationError):
            parse_usd(bad)
    with pytest.raises(ValidationError):
        parse_soft("11", Decimal(10))
    assert plain(Decimal("0E-12")) == "0" and plain(Decimal("1.500000000000")) == "1.5"


ops = st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release"]), micro,
                         st.floats(min_value=0, max_value=1)), max_size=60)


@settings(max_examples=200)
@given(micro.map(lambda d: d * 4), ops)
def test_reserve_settle_never_negative_never_over(hard: Decimal, steps: list) -> None:
    b = Budget("feature", "f1", "total", hard, id=1)
    held: list[Decimal] = []
    for op, amount, share in steps:
        if op == "reserve":
            try:
                (b,) = reserve_all([b], amount)
                held.append(amount)
            except BudgetExceeded as err:
                # Refused only when it really does not fit.
                assert b.spent + b.reserved + amount > b.hard_limit
                assert Decimal(err.details["requested"]) == amount
        elif held:
            amount = held.pop(0)
            if op == "settle":
                # The actual cost never exceeds the worst case that was reserved.
                actual = (amount * Decimal(str(share))).quantize(Decimal("1e-12"))
                b = settle_one(b, amount, actual)
            else:
                b = release_one(b, amount)
        assert b.spent >= 0 and b.reserved >= 0
        assert b.spent + b.reserved <= b.hard_limit
        assert b.reserved == sum(held, Decimal(0))
