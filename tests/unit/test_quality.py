"""The quality guard's pure parts: Wilson bounds, the floor's moves, the judges and their
agreement with small labelled sets (the LLM judge through the stand-in's judge, swapped)."""

from __future__ import annotations

import re

import pytest

from models.domain import judges
from models.domain.quality import (FeatureQuality, floor_move, pairs_to_clear, sampled,
                                   shadow_budget_key, wilson)
from models.domain.request import _NAME_PATTERN
from workers.providers.standin.scripted import judge as standin_judge, scripted

#: (answer a, answer b, do they say the same thing?) - a labelled set for the text judges.
LABELLED = [
    ("The order ships in 3 days.", "Your order will ship within 3 days.", True),
    ("Paris is the capital of France.", "The capital of France is Paris.", True),
    ("Return the mug within 30 days for a refund.",
     "You can get a refund if you return the mug within 30 days.", True),
    ("The blue kettle holds 1.7 litres.", "This blue kettle has a 1.7 litre capacity.", True),
    ("Yes, the jacket is waterproof.", "Yes - this jacket is waterproof.", True),
    ("The store opens at 9 am.", "Our shop opens at nine in the morning.", True),
    ("The order ships in 3 days.", "We do not ship to your country.", False),
    ("Paris is the capital of France.", "Bananas are rich in potassium.", False),
    ("Return the mug within 30 days for a refund.", "The mug is dishwasher safe.", False),
    ("The blue kettle holds 1.7 litres.", "The red toaster has four slots.", False),
    ("Yes, the jacket is waterproof.", "No, the jacket is not waterproof at all.", False),
    ("The store opens at 9 am.", "Parking is free on Sundays.", False),
]

#: A labelled set for the LLM judge as the stand-in plays it: rewordings, contradictions that
#: share most words (its grey zone, where its order bias shows), and unrelated answers.
LLM_LABELLED = [
    ("Paris is the capital of France.", "The capital of France is Paris.", True),
    ("Return the mug within 30 days for a refund.",
     "You can get a refund if you return the mug within 30 days.", True),
    ("Yes, the jacket is waterproof.", "Yes - this jacket is waterproof.", True),
    ("The kettle holds 1.7 litres of water.", "The kettle holds 1.7 litres.", True),
    ("Yes, the jacket is waterproof.", "No, the jacket is not waterproof at all.", False),
    ("The store opens at 9 am on weekdays.", "The store opens at noon.", False),
    ("The order ships in 3 days by courier.", "The order ships in 10 days.", False),
    ("Paris is the capital of France.", "Bananas are rich in potassium.", False),
    ("The store opens at 9 am.", "Parking is free on Sundays.", False),
]


def test_wilson_matches_known_intervals() -> None:
    lo, hi = wilson(8, 10, 0.95)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + 1.959964 ** 2), abs=1e-6)


def test_the_floor_waits_until_perfect_agreement_could_clear_it() -> None:
    n = pairs_to_clear(0.8)
    assert wilson(n, n)[0] >= 0.8 > wilson(n - 1, n - 1)[0]
    guard = FeatureQuality(floor=0.8, min_pairs=1)
    assert floor_move("f", guard, agree=n - 1, n=n - 1, threshold=0.5, base=0.5) is None


def test_low_agreement_moves_toward_the_flagship_never_past_the_bound() -> None:
    guard = FeatureQuality(floor=0.6, release=0.9, min_pairs=10, step=0.3, max_threshold=0.9)
    move = floor_move("f", guard, agree=2, n=20, threshold=0.5, base=0.5)
    assert move is not None and (move.direction, move.after) == ("flagship", 0.8)
    capped = floor_move("f", guard, agree=2, n=20, threshold=0.8, base=0.5)
    assert capped is not None and capped.after == 0.9
    assert floor_move("f", guard, agree=2, n=20, threshold=0.9, base=0.5) is None


def test_high_agreement_moves_back_never_below_the_operators_threshold() -> None:
    guard = FeatureQuality(floor=0.6, release=0.9, min_pairs=10, step=0.3)
    back = floor_move("f", guard, agree=200, n=200, threshold=0.7, base=0.5)
    assert back is not None and (back.direction, back.after) == ("cheap", 0.5)
    assert floor_move("f", guard, agree=200, n=200, threshold=0.5, base=0.5) is None
    # Between floor and release: stable, no move either way.
    assert floor_move("f", guard, agree=160, n=200, threshold=0.7, base=0.5) is None


def test_sampling_is_stable_and_close_to_its_share() -> None:
    ids = [f"r{i}" for i in range(4000)]
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [sampled(i, 0.1) for i in ids[:50]] == [sampled(i, 0.1) for i in ids[:50]]
    assert not any(sampled(i, 0.0) for i in ids[:50])


def test_exact_judge_normalizes_labels() -> None:
    assert judges.exact(" Positive.", "positive").agree
    assert judges.exact("POSITIVE!", "  positive ").agree
    assert not judges.exact("positive", "negative").agree


def test_json_judge_compares_the_named_fields() -> None:
    a = '{"label": "Kitchen", "confidence": 0.9}'
    b = '{"label": "kitchen", "confidence": 0.7}'
    assert judges.json_fields(a, b, ["label"]).agree
    assert not judges.json_fields(a, b).agree
    assert judges.json_fields(a, b).score == 0.5
    assert not judges.json_fields(a, "not json", ["label"]).agree


def test_llm_judge_position_swap_cancels_the_order_bias_on_a_labelled_set() -> None:
    def vote(first: str, second: str) -> bool | None:
        return judges.parse_vote(standin_judge(judges.rubric("q", first, second)))

    one_order = [vote(a, b) is label for a, b, label in LLM_LABELLED]
    swapped = [judges.combine(vote(a, b), vote(b, a)).agree is label
               for a, b, label in LLM_LABELLED]
    # The stand-in judge calls a grey-zone pair SAME when the longer answer comes first;
    # asking both orders and agreeing only when both say SAME removes that bias.
    assert sum(swapped) / len(LLM_LABELLED) >= 0.9
    assert sum(swapped) > sum(one_order), "the labelled set must exercise the order bias"


def test_embedding_judge_agrees_with_the_labelled_set() -> None:
    pytest.importorskip("sentence_transformers")
    from workers.judging import embed

    vectors = embed([t for a, b, _ in LABELLED for t in (a, b)])
    verdicts = [judges.similarity(vectors[2 * i], vectors[2 * i + 1], 0.6).agree is label
                for i, (_, _, label) in enumerate(LABELLED)]
    assert sum(verdicts) / len(LABELLED) >= 0.9


def test_the_standin_answers_scripted_prompts_per_model() -> None:
    prompt = "Classify: [[answer: positive; gpt-4o-mini: negative]]"
    assert scripted("gpt-4o-mini", prompt) == "negative"
    assert scripted("gpt-4o", prompt) == "positive"
    assert scripted("gpt-4o", "no script here") is None


def test_a_routing_move_changes_the_cache_key_of_auto_only() -> None:
    from models.domain.request import parse_request
    from models.domain.settings import load_settings
    from queues.memory_cache import MemoryResponseCache

    class Moves:
        moved: dict[tuple[str, str], float] = {}

        def thresholds(self) -> dict[tuple[str, str], float]:
            return self.moved

    cache = MemoryResponseCache(load_settings({}))
    cache.moves = Moves()
    auto = parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "content": "Classify: great mug"}]})
    named = auto.model_copy(update={"model": "gpt-4o"})
    before = (cache.key(auto).id, cache.key(named).id)
    Moves.moved = {("other-org", "f"): 1.0}
    # Another org's feature of the same name moved: this org's answers still answer.
    assert (cache.key(auto).id, cache.key(named).id) == before
    Moves.moved = {("default", "f"): 1.0}
    # Cheap answers cached before the floor moved the feature must not answer after it.
    assert cache.key(auto).id != before[0]
    assert cache.key(named).id == before[1]


def test_long_feature_names_keep_shadow_budgets_of_their_own() -> None:
    # Cut at 64 characters, two features sharing their first 57 shared one shadow budget.
    a, b = "f" * 60 + "-one", "f" * 60 + "-two"
    ka, kb = shadow_budget_key(a), shadow_budget_key(b)
    assert ka != kb and len(ka) <= 64 and len(kb) <= 64
    assert re.fullmatch(_NAME_PATTERN, ka)  # an operator can name it to `sluice budget set`
    assert shadow_budget_key("search") == "shadow:search"
