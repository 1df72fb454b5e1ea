"""Cost as a pure Decimal function of normalized usage and a model's prices."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from models.domain.catalogue import ModelSpec
from models.domain.request import ChatRequest
from models.domain.tokens import PromptCount, TokenBound, input_bound, prompt_count
from models.domain.usage import Usage

_MILLION = Decimal(1_000_000)
#: How far a provider's count of a prompt may exceed ours when deciding a reservation's price
#: tier (Gemini counts with its own tokenizer; 1.25x covers the excess measured for others).
LONG_TIER_MARGIN = Decimal("1.25")
#: The ledger's precision (NUMERIC(24, 12)): every amount is rounded to it once, here, so what
#: a result reports and what the ledger stores are the same number.
PLACES = Decimal("1e-12")


def to_ledger(amount: Decimal) -> Decimal:
    """``amount`` rounded (half to even) to the ledger's 12 decimal places."""
    return amount.quantize(PLACES, rounding=ROUND_HALF_EVEN)


def cost_of(usage: Usage, model: ModelSpec, *, batch: bool = False) -> Decimal:
    """Exact USD cost of ``usage`` on ``model``; ``batch`` applies the provider's batch discount.

    A model with a long-context tier bills every token of a prompt above its threshold at the
    long tier's prices (Gemini: more than 200k prompt tokens, cached ones included).
    """
    p = model.price_for(usage.input_total)
    total = (
        usage.input_uncached * p.input
        + usage.cache_read * p.cache_read
        + usage.cache_write_5m * p.cache_write_5m
        + usage.cache_write_1h * p.cache_write_1h
        + usage.output * p.output
    ) / _MILLION
    if batch and p.batch_discount:
        total = total * (1 - p.batch_discount)
    return to_ledger(total)


def baseline_cost(usage: Usage, baseline: ModelSpec) -> Decimal:
    """What the same tokens cost with no lever: every prompt token uncached, on the flagship."""
    return cost_of(Usage(input_uncached=usage.input_total, output=usage.output), baseline)


def list_cost(usage: Usage, model: ModelSpec) -> Decimal:
    """The same tokens on the same model with no prompt caching and no batch discount."""
    return cost_of(Usage(input_uncached=usage.input_total, output=usage.output), model)


def worst_case_cost(prompt: PromptCount, max_tokens: int, model: ModelSpec) -> Decimal:
    """Upper bound of one call's cost on ``model``, for budget reservation.

    The input is the provider's own count at most (``input_bound``: its tokenizer's excess
    over ours and its tool-use system prompt included), every input token priced at the
    dearest input class the model has (a cache write can cost more than plain input), and
    the whole ``max_tokens`` at the output price. A prompt that the provider's own count could
    put above a long-context threshold (ours times :data:`LONG_TIER_MARGIN`) is priced at the
    long tier: the bound holds across the boundary.
    """
    tokens = input_bound(prompt, model.bound)
    p = model.price_for(int(max(tokens, prompt.tokens * LONG_TIER_MARGIN)))
    dearest_input = max(p.input, p.cache_read, p.cache_write_5m, p.cache_write_1h)
    # Rounded up, so the reservation stays an upper bound of the settled cost.
    return ((tokens * dearest_input + max_tokens * p.output) / _MILLION).quantize(
        PLACES, rounding=ROUND_CEILING)


def prompt_for(request: ChatRequest, models: Sequence[ModelSpec],
               prompt_tokens: int | None = None) -> PromptCount:
    """What pricing ``request``'s worst case on ``models`` needs: only ``prompt_tokens`` (our
    o200k count, which the envelope carries) when every one of them counts as we do, else the
    prompt counted again in parts."""
    if prompt_tokens is not None and all(m.bound == TokenBound() for m in models):
        return PromptCount(tokens=prompt_tokens)
    # Images count by the first (the routed) model's rule, as the envelope's count does.
    return prompt_count(request, models[0] if models else None)


def request_worst_case(request: ChatRequest, model: ModelSpec,
                       prompt_tokens: int | None = None) -> Decimal:
    """:func:`worst_case_cost` of ``request`` on ``model``, a true bound for that one model."""
    return worst_case_cost(prompt_for(request, [model], prompt_tokens), request.max_tokens, model)


def storage_cost(tokens: int, seconds: float, model: ModelSpec) -> Decimal:
    """Explicit context-cache storage of ``tokens`` for ``seconds`` (per token-hour price)."""
    hours = Decimal(str(round(max(seconds, 0.0), 3))) / 3600
    return to_ledger(tokens * model.price.storage_per_hour * hours / _MILLION)
