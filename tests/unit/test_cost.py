"""Usage normalization and cost against hand-computed bills; invariants with hypothesis."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.domain.catalogue import load_catalogue
from models.domain.cost import baseline_cost, cost_of, worst_case_cost
from models.domain.tokens import PromptCount
from models.domain.usage import Usage, from_anthropic, from_openai

CAT = load_catalogue()


def test_openai_prompt_tokens_include_cached_tokens_exactly_once() -> None:
    usage = from_openai({"prompt_tokens": 2000, "completion_tokens": 100,
                         "prompt_tokens_details": {"cached_tokens": 1536}})
    assert usage == Usage(input_uncached=464, cache_read=1536, output=100)
    # gpt-4o: 464 * 2.50 + 1536 * 1.25 + 100 * 10.00 = 1160 + 1920 + 1000 = 4080 per 1M
    assert cost_of(usage, CAT.get("gpt-4o")) == Decimal("0.00408")


def test_anthropic_input_tokens_exclude_cache_buckets() -> None:
    usage = from_anthropic({"input_tokens": 50, "output_tokens": 200,
                            "cache_read_input_tokens": 3000,
                            "cache_creation_input_tokens": 1000,
                            "cache_creation": {"ephemeral_5m_input_tokens": 400,
                                               "ephemeral_1h_input_tokens": 600}})
    assert usage == Usage(input_uncached=50, cache_read=3000, cache_write_5m=400,
                          cache_write_1h=600, output=200)
    assert usage.input_total == 4050
    # sonnet: 50*3 + 3000*0.30 + 400*3.75 + 600*6 + 200*15 = 150+900+1500+3600+3000 = 9150
    assert cost_of(usage, CAT.get("claude-sonnet-4-5")) == Decimal("0.00915")


def test_anthropic_total_without_split_counts_as_five_minute_writes() -> None:
    usage = from_anthropic({"input_tokens": 10, "output_tokens": 1,
                            "cache_creation_input_tokens": 2048})
    assert usage.cache_write_5m == 2048 and usage.cache_write_1h == 0


def test_batch_discount_halves_the_bill() -> None:
    usage = Usage(input_uncached=1000, output=1000)
    full = cost_of(usage, CAT.get("gpt-4o-mini"))
    assert full == Decimal("0.00075")
    assert cost_of(usage, CAT.get("gpt-4o-mini"), batch=True) == full / 2


def test_baseline_prices_every_token_uncached_on_the_flagship() -> None:
    usage = Usage(input_uncached=100, cache_read=900, output=50)
    assert baseline_cost(usage, CAT.get("gpt-4o")) == Decimal("0.0030")  # 1000*2.5+50*10


def test_self_hosted_price_comes_from_gpu_hour_and_throughput() -> None:
    tiny = CAT.get("sluice-tiny-llama")
    # $2.00/h over 20,000 prompt tokens/s = 2/3600/20000*1e6 per 1M tokens
    assert tiny.price.input == (Decimal("2.00") / 3600 / 20000 * 1000000).quantize(Decimal("1e-12"))
    assert tiny.price.cache_read == 0
    assert tiny.price.output > tiny.price.input


counts = st.integers(min_value=0, max_value=5_000_000)
usages = st.builds(Usage, input_uncached=counts, cache_read=counts, cache_write_5m=counts,
                   cache_write_1h=counts, output=counts)
models = st.sampled_from(sorted(CAT.models))


@given(usages, models, st.sampled_from(["input_uncached", "cache_read", "cache_write_5m",
                                        "cache_write_1h", "output"]), counts)
def test_cost_is_monotone_in_every_token_class(u: Usage, name: str, field: str, more: int) -> None:
    model = CAT.get(name)
    bigger = u.model_copy(update={field: getattr(u, field) + more})
    assert cost_of(bigger, model) >= cost_of(u, model) >= 0


@given(usages, models)
def test_worst_case_bounds_the_actual_cost(u: Usage, name: str) -> None:
    model = CAT.get(name)
    assert worst_case_cost(PromptCount(tokens=u.input_total), u.output, model) >= cost_of(u, model)


@given(usages, models)
def test_cost_is_exact_decimal(u: Usage, name: str) -> None:
    assert isinstance(cost_of(u, CAT.get(name)), Decimal)


@pytest.mark.parametrize("raw", [{}, None, {"prompt_tokens": 5, "prompt_tokens_details": None}])
def test_missing_usage_fields_count_as_zero(raw: object) -> None:
    assert from_openai(raw).input_total == (5 if raw and raw.get("prompt_tokens") else 0)


nat = st.integers(min_value=0, max_value=2_000_000)


@given(prompt=nat, cached_frac=st.floats(0, 1), out=nat,
       model=st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"]))
def test_openai_bill_matches_hand_formula(prompt: int, cached_frac: float, out: int,
                                          model: str) -> None:
    cached = int(prompt * cached_frac)
    usage = from_openai({"prompt_tokens": prompt, "completion_tokens": out,
                         "prompt_tokens_details": {"cached_tokens": cached}})
    p = CAT.get(model).price
    hand = ((prompt - cached) * p.input + cached * p.cache_read + out * p.output) / 1_000_000
    assert cost_of(usage, CAT.get(model)) == hand
    assert usage.input_total == prompt  # cached tokens counted exactly once


@given(uncached=nat, read=nat, w5=nat, w1=nat, out=nat,
       model=st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-7"]))
def test_anthropic_bill_matches_hand_formula(uncached: int, read: int, w5: int, w1: int,
                                             out: int, model: str) -> None:
    usage = from_anthropic({"input_tokens": uncached, "output_tokens": out,
                            "cache_read_input_tokens": read,
                            "cache_creation_input_tokens": w5 + w1,
                            "cache_creation": {"ephemeral_5m_input_tokens": w5,
                                               "ephemeral_1h_input_tokens": w1}})
    p = CAT.get(model).price
    # Anthropic's published multipliers: writes 1.25x (5 min) and 2x (1 h), reads 0.1x.
    assert p.cache_write_5m == p.input * Decimal("1.25")
    assert p.cache_write_1h == p.input * 2 and p.cache_read == p.input / 10
    hand = (uncached * p.input + read * p.input / 10 + w5 * p.input * Decimal("1.25")
            + w1 * p.input * 2 + out * p.output) / 1_000_000
    assert cost_of(usage, CAT.get(model)) == hand
