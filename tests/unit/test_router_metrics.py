"""Router metrics against curves worked out by hand: oracle, constant, random, reversed."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.router import metrics as M

# Four prompts: the strong model wins on the first two, ties on the third, loses the fourth.
WEAK = [0.0, 0.0, 1.0, 1.0]
STRONG = [1.0, 1.0, 1.0, 0.0]


def test_oracle_curve_by_hand() -> None:
    curve = M.quality_curve(M.oracle_scores(WEAK, STRONG), WEAK, STRONG)
    # Oracle scores tie on the two wins, so the curve has points only at block edges.
    assert curve.shares.tolist() == [0.0, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == [0.5, 1.0, 1.0, 0.75]
    # Area: 0.5*0.75 + 0.25*1.0 + 0.25*0.875 = 0.84375; weak 0.5, strong 0.75.
    assert M.apgr(curve) == pytest.approx((0.84375 - 0.5) / 0.25)
    # 50 % of the gap is quality 0.625: a quarter of the way up the first segment.
    assert M.cpt(curve, 0.5) == pytest.approx(0.125)
    assert M.share_for_quality(curve, 0.95 * 0.75) == pytest.approx(0.2125)


def test_constant_router_is_the_straight_line() -> None:
    curve = M.quality_curve([0.3] * 4, WEAK, STRONG)
    assert curve.shares.tolist() == [0.0, 1.0]
    assert M.apgr(curve) == pytest.approx(0.5)
    assert M.cpt(curve, 0.5) == pytest.approx(0.5)
    assert M.cpt(curve, 0.8) == pytest.approx(0.8)
    assert curve.at(0.5) == pytest.approx(0.625)


def test_reversed_oracle_is_worse_than_random() -> None:
    curve = M.quality_curve(-M.oracle_scores(WEAK, STRONG), WEAK, STRONG)
    assert M.apgr(curve) < 0.5
    assert curve.quality[1] < curve.weak  # it spends strong calls on the loss first


def test_random_scores_give_about_half() -> None:
    rng = random.Random(3)
    weak = [float(rng.random() < 0.65) for _ in range(20_000)]
    strong = [float(rng.random() < 0.85) for _ in range(20_000)]
    apgrs = [M.apgr(M.quality_curve([rng.random() for _ in weak], weak, strong))
             for _ in range(5)]
    assert abs(float(np.mean(apgrs)) - 0.5) < 0.03
    perfect = M.apgr(M.quality_curve(M.oracle_scores(weak, strong), weak, strong))
    assert perfect > 1.0  # the oracle beats "always strong": it never sends the strong losses


def test_unreachable_target_is_nan_and_bad_input_raises() -> None:
    curve = M.quality_curve([0.1, 0.2], [0.0, 0.0], [0.5, 0.5])
    assert math.isnan(M.share_for_quality(curve, 0.9))
    assert M.share_for_quality(curve, 0.0) == 0.0
    assert math.isnan(M.apgr(M.quality_curve([0.1], [1.0], [0.0])))  # no gap to recover
    with pytest.raises(ValueError):
        M.quality_curve([], [], [])
    with pytest.raises(ValueError):
        M.quality_curve([0.1], [1.0, 0.0], [1.0, 1.0])


@given(st.lists(st.tuples(st.floats(0, 1), st.sampled_from([0.0, 1.0]),
                          st.sampled_from([0.0, 1.0])), min_size=2, max_size=60))
def test_curve_ends_at_weak_and_strong(rows: list[tuple[float, float, float]]) -> None:
    scores, weak, strong = zip(*rows)
    curve = M.quality_curve(scores, weak, strong)
    assert curve.quality[0] == pytest.approx(np.mean(weak))
    assert curve.quality[-1] == pytest.approx(np.mean(strong))
    assert np.all(np.diff(curve.shares) > 0)
    oracle = M.quality_curve(M.oracle_scores(weak, strong), weak, strong)
    # No router beats the oracle anywhere on the curve.
    for share in np.linspace(0, 1, 11):
        assert curve.at(share) <= oracle.at(share) + 1e-9
