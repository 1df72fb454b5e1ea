"""The explicit-cache rule: break-even figures, and the decision equal to the cheaper bill."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from models.domain.catalogue import load_catalogue
from models.domain.context_cache import break_even, pays, prefix_cost_per_window
from models.domain.cost import storage_cost

CAT = load_catalogue()
FLASH, PRO = CAT.get("gemini-2.5-flash"), CAT.get("gemini-2.5-pro")


def test_break_even_of_the_readme_example() -> None:
    # Flash, 1 h TTL, no implicit hits: (1.00 + 0.30) / 0.27 = 4.81 requests an hour to
    # create, 1.00 / 0.27 = 3.70 to keep one.
    assert break_even(FLASH, 3600, 0.0, creating=True) == Decimal("1.30") / Decimal("0.27")
    assert break_even(FLASH, 3600, 0.0, creating=False) == Decimal("1.00") / Decimal("0.27")
    # Implicit caching that hits half the time halves what explicit caching can save.
    assert break_even(FLASH, 3600, 0.5, creating=True) == 2 * break_even(FLASH, 3600, 0.0,
                                                                          creating=True)
    assert break_even(FLASH, 3600, 1.0, creating=True) is None  # implicit does it all
    assert break_even(CAT.get("gpt-4o"), 3600, 0.0, creating=True) is None  # no storage price
    # Pro: (4.50 + 1.25) / 1.125 = 5.1 an hour.
    assert break_even(PRO, 3600, 0.0, creating=True) == Decimal("5.75") / Decimal("1.125")


def test_the_minimum_prefix_and_the_threshold() -> None:
    assert not pays(PRO, 4095, 1000, 3600, 0.0, creating=True)  # below Pro's 4,096
    assert pays(FLASH, 2000, 5, 3600, 0.0, creating=True)
    assert not pays(FLASH, 2000, 4, 3600, 0.0, creating=True)
    assert pays(FLASH, 2000, 4, 3600, 0.0, creating=False)  # keeping one needs fewer


@given(requests=st.integers(0, 5000), hit=st.floats(0, 1), ttl=st.integers(61, 86_400),
       creating=st.booleans(), tokens=st.integers(4096, 900_000))
def test_the_rule_picks_the_cheaper_bill(requests: int, hit: float, ttl: int, creating: bool,
                                         tokens: int) -> None:
    explicit = prefix_cost_per_window(PRO, tokens, requests, ttl, hit, explicit=True,
                                      creating=creating)
    implicit = prefix_cost_per_window(PRO, tokens, requests, ttl, hit, explicit=False)
    assert pays(PRO, tokens, requests, ttl, hit, creating=creating) == (explicit < implicit)


@given(seconds=st.floats(0, 10 * 86_400), split=st.floats(0, 1))
def test_storage_adds_up_over_periods(seconds: float, split: float) -> None:
    first = round(seconds * split, 3)
    whole = storage_cost(4320, seconds, FLASH)
    parts = storage_cost(4320, first, FLASH) + storage_cost(4320, round(seconds, 3) - first,
                                                            FLASH)
    assert abs(whole - parts) <= Decimal("2e-12")
