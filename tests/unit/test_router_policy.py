"""RoutingPolicy: forced and allowed tiers, the quality floor, and threshold calibration."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.domain.errors import ConfigError
from scheduler.router.policy import RoutingPolicy, TierDecision, calibrate_threshold


def test_threshold_splits_cheap_and_flagship() -> None:
    policy = RoutingPolicy(threshold=0.6)
    assert policy.decide(0.6).tier == "cheap"
    assert policy.decide(0.59).tier == "flagship"
    low = policy.decide(0.2, router="heuristic@1")
    assert (low.score, low.threshold, low.router) == (0.2, 0.6, "heuristic@1")
    assert "below threshold" in low.reason


def test_forced_tier_wins_and_needs_no_score() -> None:
    policy = RoutingPolicy(forced_tier="flagship")
    assert not policy.needs_score
    for score in (None, 0.0, 1.0):
        decision = policy.decide(score)
        assert decision.tier == "flagship" and decision.reason == "forced"


def test_forced_tier_must_be_allowed() -> None:
    with pytest.raises(ConfigError, match="forced_tier"):
        RoutingPolicy(allowed_tiers=("cheap", "flagship"), forced_tier="self-hosted")


def test_allowed_tiers_order_picks_easy_and_hard_tier() -> None:
    bulk = RoutingPolicy(allowed_tiers=("self-hosted", "flagship"), threshold=0.5)
    assert bulk.decide(0.9).tier == "self-hosted"
    assert bulk.decide(0.1).tier == "flagship"
    only = RoutingPolicy(allowed_tiers=("cheap",))
    assert only.decide(None).tier == "cheap" and not only.needs_score


@pytest.mark.parametrize("tiers", [(), ("cheap", "cheap"), ("cheap", "gpt-4o")])
def test_bad_allowed_tiers_are_refused(tiers: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        RoutingPolicy(allowed_tiers=tiers)


def test_quality_floor_overrides_a_low_threshold() -> None:
    policy = RoutingPolicy(threshold=0.3, quality_floor=0.7)
    assert policy.effective_threshold == 0.7
    decision = policy.decide(0.5)
    assert decision.tier == "flagship"
    assert decision.threshold == 0.7 and "quality floor" in decision.reason
    assert policy.decide(0.75).tier == "cheap"
    # A floor below the threshold changes nothing.
    assert RoutingPolicy(threshold=0.6, quality_floor=0.2).decide(0.5).tier == "flagship"


def test_decide_refuses_a_missing_score_when_one_is_needed() -> None:
    with pytest.raises(ValueError):
        RoutingPolicy().decide(None)
    with pytest.raises(ValueError):
        RoutingPolicy().decide(float("nan"))


def test_record_carries_score_threshold_and_tier() -> None:
    record = RoutingPolicy(threshold=0.4).decide(0.8, router="learned@abc").to_record()
    assert record["tier"] == "cheap" and record["score"] == 0.8
    assert record["threshold"] == 0.4 and record["router"] == "learned@abc"
    assert isinstance(TierDecision(**record), TierDecision)


@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_calibration_hits_target_share(target: float) -> None:
    rng = random.Random(7)
    # Skewed, like real router scores: most requests look easy.
    scores = [rng.betavariate(5, 1.5) for _ in range(5000)]
    policy = RoutingPolicy().calibrated(scores, target)
    flagship = sum(policy.decide(s).tier == "flagship" for s in scores) / len(scores)
    assert abs(flagship - target) <= 0.005
    fresh = [rng.betavariate(5, 1.5) for _ in range(5000)]
    fresh_share = sum(policy.decide(s).tier == "flagship" for s in fresh) / len(fresh)
    assert abs(fresh_share - target) <= 0.03


def test_calibration_with_ties_and_bad_input() -> None:
    assert calibrate_threshold([0.5] * 10, 0.0) == 0.0
    assert calibrate_threshold([0.5] * 10, 1.0) > 0.5
    with pytest.raises(ConfigError):
        calibrate_threshold([], 0.5)
    with pytest.raises(ConfigError):
        calibrate_threshold([0.1], 1.5)
    with pytest.raises(ConfigError):
        RoutingPolicy().calibrated([0.1, 0.2])  # no target given anywhere


@given(st.lists(st.floats(0, 1), min_size=1, max_size=200), st.floats(0, 1))
def test_calibration_share_never_off_by_more_than_ties(scores: list[float], target: float) -> None:
    threshold = calibrate_threshold(scores, target)
    below = sum(s < threshold for s in scores)
    wanted = round(target * len(scores))
    # Exactly the wanted count, unless tied scores straddle the cut.
    if len(set(scores)) == len(scores):
        assert below == wanted
    else:
        assert abs(below - wanted) <= max(scores.count(s) for s in scores)


def test_policy_from_config_dict() -> None:
    from scheduler.router.policy import policy_from_dict

    policy = policy_from_dict({"feature": "bulk", "allowed_tiers": ["self-hosted", "flagship"],
                               "threshold": 0.7})
    assert policy.allowed_tiers == ("self-hosted", "flagship")
    assert policy.decide(0.8).tier == "self-hosted"
    with pytest.raises(ConfigError, match="thresh"):
        policy_from_dict({"thresh": 0.5})
