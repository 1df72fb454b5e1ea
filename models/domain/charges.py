"""What an attempt whose bill is unknown is charged: the best estimate, never less than sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.cost import cost_of, worst_case_cost
from models.domain.tokens import PromptCount, input_bound
from models.domain.usage import Usage

#: Outcomes where the provider had the request and may have generated all of ``max_tokens``
#: without us seeing any of it: charged at the attempt's worst case.
BLIND = frozenset({"timeout", "unparseable", "lost", "abandoned"})
#: Outcomes where we saw what was generated until it stopped: input plus output received.
PARTIAL = frozenset({"broken_stream"})


def estimate(outcome: str, *, prompt: PromptCount, received_tokens: int, max_tokens: int,
             model: ModelSpec) -> tuple[Usage, Decimal]:
    """Usage and cost charged for an attempt that ended in ``outcome`` with no usage of its own.

    A stream that broke off (or was abandoned after text arrived) is charged the prompt as sent
    (the provider's count at most), uncached, and the tokens received; anything blind is
    charged its worst case.
    """
    sent = input_bound(prompt, model.bound)
    if outcome in PARTIAL or (outcome == "abandoned" and received_tokens > 0):
        usage = Usage(input_uncached=sent, output=received_tokens)
        return usage, cost_of(usage, model)
    if outcome in BLIND:
        return (Usage(input_uncached=sent, output=max_tokens),
                worst_case_cost(prompt, max_tokens, model))
    return Usage(), Decimal(0)


def outcome_of(billed: str | None, *, streamed_text: bool, abandoned: bool,
               unparseable: bool) -> str:
    """The attempt outcome of a failed call from what its error says about billing."""
    if abandoned:
        return "abandoned"
    if billed != "unknown":
        return "refused"
    if streamed_text:
        return "broken_stream"
    return "unparseable" if unparseable else "timeout"


def reachable(catalogue: Catalogue, fallbacks: Mapping[str, Sequence[str]],
              model: str, escalation: Sequence[str] = ()) -> list[ModelSpec]:
    """The models a request routed to ``model`` may be sent to: it, then its fallbacks, then
    the stronger rungs of its ladder it may climb to (``escalation``), each once."""
    primary = catalogue.get(model)
    names = [primary.name, *fallbacks.get(primary.name, []), *escalation]
    return [catalogue.get(n) for n in dict.fromkeys(names)]


def reach_worst_case(prompt: PromptCount, max_tokens: int, models: Sequence[ModelSpec]
                     ) -> Decimal:
    """The worst case of one attempt on the dearest of ``models``: what admission reserves,
    so a fallback to a dearer model is covered before it is sent."""
    return max(worst_case_cost(prompt, max_tokens, m) for m in models)
