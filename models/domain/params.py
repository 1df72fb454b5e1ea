"""What each provider gets for each chat parameter: forwarded, translated, or refused.

One function decides, for a request and a catalogue model, which of the request's parameters
that model cannot honour (:func:`refusals`). Routing calls it to pick a model that can
(scheduler/route.py), the front door and ``Gateway.submit()`` refuse with a 400 naming the
parameter and the models that accept it, and the adapters' shaping (workers/providers/
shaping.py) calls it again to leave out what the caller allowed to be dropped. The README's
parameter table is this module in prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.domain.errors import UnsupportedParameter
from models.domain.generation import MIN_THINKING_BUDGET

if TYPE_CHECKING:
    from models.domain.catalogue import Catalogue, ModelSpec
    from models.domain.request import ChatRequest

#: reasoning_effort -> Anthropic budget_tokens (at most half of max_tokens, at least 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32000}
#: Parameters sluicegate never sends anywhere, whatever the caller allows to drop.
_NOT_DROPPABLE = frozenset({"max_tokens", "messages", "tools"})


@dataclass(frozen=True)
class Refusal:
    """A parameter (a ChatRequest field) the model cannot honour, and why."""

    param: str
    reason: str

    @property
    def droppable(self) -> bool:
        """Whether ``drop_params`` may leave it out (the prompt and its limits never)."""
        return self.param not in _NOT_DROPPABLE


def explicit(request: ChatRequest) -> frozenset[str]:
    """The fields the caller set (a default temperature is ours, not theirs)."""
    return frozenset(request.model_fields_set)


def thinking_budget(request: ChatRequest) -> int | None:
    """Anthropic's ``budget_tokens`` for this request, or None when it asks for no thinking."""
    if request.thinking_budget is not None:
        return request.thinking_budget
    effort = request.reasoning_effort
    if effort is None or effort == "none":
        return None
    return max(MIN_THINKING_BUDGET, min(THINKING_BUDGETS[effort], request.max_tokens // 2))


def openai_effort(request: ChatRequest) -> str | None:
    """OpenAI's ``reasoning_effort`` for this request (a thinking budget mapped to a level)."""
    if request.reasoning_effort is not None:
        return request.reasoning_effort
    budget = request.thinking_budget
    if budget is None:
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def refusals(request: ChatRequest, model: ModelSpec) -> list[Refusal]:
    """Every parameter of ``request`` that ``model`` cannot honour, in a stable order."""
    out: list[Refusal] = []
    if request.has_images and not model.can("vision"):
        out.append(Refusal("messages", "does not see images"))
    if request.static.tools and not model.can("tools"):
        out.append(Refusal("tools", "cannot call tools"))
    # (A model whose output may fill its context says so with a ContextLengthError instead.)
    if request.max_tokens > model.max_output and model.max_output < model.context:
        out.append(Refusal("max_tokens", f"writes at most {model.max_output} output tokens"))
    if model.provider == "openai":
        _openai(request, model, out)
    elif model.provider == "anthropic":
        _anthropic(request, model, out)
    elif model.provider == "google":
        _gemini(request, out)
    else:
        _self_hosted(request, out)
    _common(request, model, out)
    return out


def _common(request: ChatRequest, model: ModelSpec, out: list[Refusal]) -> None:
    """Checks whose answer depends on capabilities alone."""
    choice = request.tool_choice
    if choice is not None and choice.forces and not model.can("forced_tool_choice"):
        out.append(Refusal("tool_choice", "cannot be forced to call a tool"))
    if request.response_format == "json" and not model.can("json_mode"):
        out.append(Refusal("response_format", "has no JSON mode (json_object)"))
    if request.response_format == "json_schema" and not model.can("json_schema"):
        out.append(Refusal("response_format", "cannot follow a JSON schema (json_schema)"))
    for name in ("logprobs", "top_logprobs"):
        if getattr(request, name) and not model.can("logprobs"):
            out.append(Refusal(name, "returns no log probabilities"))
    if request.verbosity is not None and not model.can("verbosity"):
        out.append(Refusal("verbosity", "takes no verbosity"))
    if request.prediction is not None and not model.can("prediction"):
        out.append(Refusal("prediction", "takes no predicted output"))
    if request.service_tier in ("flex", "scale", "priority"):
        out.append(Refusal("service_tier", f"service_tier {request.service_tier!r} bills at "
                                           "rates sluicegate does not price; use auto or "
                                           "default"))
    _reasoning(request, model, out)


def _reasoning(request: ChatRequest, model: ModelSpec, out: list[Refusal]) -> None:
    effort, budget = request.reasoning_effort, request.thinking_budget
    if effort is None and budget is None:
        return
    param = "reasoning_effort" if effort is not None else "thinking_budget"
    if effort == "none" and "none" not in model.reasoning_efforts:
        # Claude thinks only when asked to; an OpenAI reasoning model always reasons.
        if model.can("reasoning") and model.provider in ("openai", "google"):
            out.append(Refusal(param, "always reasons (efforts "
                                      f"{', '.join(model.reasoning_efforts)})"))
        return  # a model that does not reason already thinks "none"
    if not model.can("reasoning"):
        out.append(Refusal(param, "does not reason"))
        return
    if model.provider == "openai":
        level = openai_effort(request)
        if level not in model.reasoning_efforts:
            out.append(Refusal(param, f"takes reasoning efforts "
                                      f"{', '.join(model.reasoning_efforts)}, not {level!r}"))
        return
    if effort is not None and effort not in model.reasoning_efforts:
        out.append(Refusal(param, f"takes reasoning efforts "
                                  f"{', '.join(model.reasoning_efforts)}, not {effort!r}"))
        return
    tokens = thinking_budget(request) or 0
    if not tokens < request.max_tokens:
        out.append(Refusal(param, f"thinks within max_tokens: its thinking budget ({tokens}, "
                                  f"at least {MIN_THINKING_BUDGET}) must be below max_tokens "
                                  f"({request.max_tokens}); raise max_completion_tokens"))


def _openai(request: ChatRequest, model: ModelSpec, out: list[Refusal]) -> None:
    sampling = model.can("sampling")
    if "temperature" in explicit(request) and request.temperature != 1.0 and not sampling:
        out.append(Refusal("temperature", "takes only its default temperature (1)"))
    if request.top_p is not None and not sampling:
        out.append(Refusal("top_p", "takes no top_p"))
    if request.top_k is not None:
        out.append(Refusal("top_k", "takes no top_k (OpenAI's API has none)"))
    for name in ("presence_penalty", "frequency_penalty", "logit_bias"):
        if getattr(request, name) is not None and not model.can("penalties"):
            out.append(Refusal(name, f"takes no {name}"))


def _anthropic(request: ChatRequest, model: ModelSpec, out: list[Refusal]) -> None:
    thinking = thinking_budget(request) is not None and model.can("reasoning")
    set_ = explicit(request)
    if "temperature" in set_ and request.temperature > 1.0:
        out.append(Refusal("temperature", "takes a temperature from 0 to 1"))
    elif thinking and "temperature" in set_ and request.temperature != 1.0:
        out.append(Refusal("temperature", "takes no temperature while it thinks"))
    if request.top_p is not None:
        if "temperature" in set_:
            out.append(Refusal("top_p", "takes temperature or top_p, not both"))
        elif thinking and request.top_p < 0.95:
            out.append(Refusal("top_p", "takes a top_p from 0.95 to 1 while it thinks"))
    if thinking and request.top_k is not None:
        out.append(Refusal("top_k", "takes no top_k while it thinks"))
    for name in ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "prediction"):
        if getattr(request, name) is not None:
            out.append(Refusal(name, f"has no {name} (Anthropic's API has no equivalent)"))
    if thinking and request.tool_choice is not None and request.tool_choice.forces:
        out.append(Refusal("tool_choice", "cannot be forced to call a tool while it thinks"))
    if request.store:
        out.append(Refusal("store", "does not store completions"))
    if request.metadata and set(request.metadata) - {"user_id"}:
        out.append(Refusal("metadata", "takes metadata.user_id only"))


def _gemini(request: ChatRequest, out: list[Refusal]) -> None:
    """Gemini takes temperature (0-2), top_p, seed and both penalties in generationConfig."""
    for name in ("logit_bias", "prediction", "store", "metadata", "safety_identifier"):
        if getattr(request, name):
            out.append(Refusal(name, f"has no {name} (the Gemini API has no equivalent)"))
    if request.parallel_tool_calls is False:
        out.append(Refusal("parallel_tool_calls", "has no switch for parallel function calls"))


def _self_hosted(request: ChatRequest, out: list[Refusal]) -> None:
    for name in ("top_p", "top_k", "seed", "presence_penalty", "frequency_penalty",
                 "logit_bias", "store", "metadata", "safety_identifier"):
        if getattr(request, name):
            out.append(Refusal(name, f"(self-hosted) takes no {name}"))
    choice = request.tool_choice
    if choice is not None and choice.mode != "auto":
        out.append(Refusal("tool_choice", "(self-hosted) renders tools as text: it cannot "
                                          "be told when to call one"))
    if request.parallel_tool_calls is False:
        out.append(Refusal("parallel_tool_calls", "(self-hosted) renders tools as text"))


def accepted_by(param: str, request: ChatRequest, catalogue: Catalogue) -> list[str]:
    """Catalogue models that would honour ``param`` of ``request``."""
    return [m.name for m in catalogue.models.values()
            if m.kind == "chat" and all(r.param != param for r in refusals(request, m))]


def dropped_params(request: ChatRequest, model: ModelSpec,
                   catalogue: Catalogue | None = None) -> tuple[str, ...]:
    """What ``model`` leaves out of ``request``: nothing, or (with ``drop_params``) what it
    cannot honour. Otherwise raises UnsupportedParameter naming the first such parameter."""
    found = refusals(request, model)
    if not found:
        return ()
    blocking = [r for r in found if not (request.drop_params and r.droppable)]
    if blocking:
        raise refusal_error(blocking[0], request, model, catalogue)
    return tuple(dict.fromkeys(r.param for r in found))


def refusal_error(refusal: Refusal, request: ChatRequest, model: ModelSpec,
                  catalogue: Catalogue | None) -> UnsupportedParameter:
    """The 400 for ``refusal``: the parameter, why, and which models accept it."""
    others = [n for n in accepted_by(refusal.param, request, catalogue)
              if n != model.name] if catalogue is not None else []
    where = (f"; models that accept it: {', '.join(others)}" if others
             else "; no model in the catalogue accepts it")
    drop = (" (or allow dropping it: header x-sluice-drop-params: true, or drop_params)"
            if refusal.droppable else "")
    return UnsupportedParameter(f"{refusal.param}: {model.name} {refusal.reason}{where}{drop}",
                                field=refusal.param, model=model.name, accepted_by=others)
