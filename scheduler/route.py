"""Turn a request's model policy (and a router's score) into a concrete, validated Route."""

from __future__ import annotations

from typing import Any, Protocol

from models.domain.allow_list import clamp, may_use
from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.errors import ContextLengthError, UnknownModelError, ValidationError
from models.domain.params import dropped_params, refusals
from models.domain.request import TIER_POLICIES, ChatRequest
from models.domain.result import Route
from models.domain.settings import RoutingSettings
from models.domain.tokens import count_request


class Scorer(Protocol):
    """Anything that scores a request: the probability the cheap tier is enough."""

    name: str

    def score(self, request: ChatRequest) -> float:
        """A score in [0, 1]."""
        ...


class TierPolicy(Protocol):
    """Turns a score into a tier (see scheduler.router.policy)."""

    def decide(self, score: float) -> object:
        """An object with ``tier`` and ``reason`` attributes."""
        ...


def decide_route(request: ChatRequest, catalogue: Catalogue, routing: RoutingSettings, *,
                 scorer: Scorer | None = None, policy: TierPolicy | None = None,
                 prompt_tokens: int | None = None, ladders: Any = None) -> Route:
    """Resolve ``request.model`` to a Route and check the prompt fits the model's context.

    A feature with a ladder (``ladders``, a LadderBook) climbs it for ``auto`` and the tier
    policies (scheduler.router.climb). Otherwise ``auto`` asks ``scorer`` for a score and
    ``policy`` (or the settings' threshold) for a tier; a tier policy picks the tier's
    configured model; anything else must be a catalogue model.
    """
    policy_name = request.model
    score: float | None = None
    note = ""
    if policy_name in TIER_POLICIES and ladders is not None:
        from scheduler.route_ladder import ladder_route

        routed, note = ladder_route(request, catalogue, scorer, ladders, prompt_tokens)
        if routed is not None:
            return _finish(request, catalogue, routed, prompt_tokens, routing)
    if policy_name == "auto":
        if scorer is None:
            tier, reason = "cheap", "auto: no router configured, default tier"
        elif hasattr(scorer, "decide"):
            # A RouterSet: the feature's own policy and router pick the tier.
            decision = scorer.decide(request)
            tier, score = decision.tier, decision.score
            threshold = ("" if decision.threshold is None
                         else f" (threshold {decision.threshold:.3f})")
            reason = f"{decision.router or 'policy'}: {decision.reason}{threshold}"
        else:
            score = float(scorer.score(request))
            tier, reason = _tier_for(score, policy, routing.cheap_threshold, scorer.name)
        model = catalogue.get(routing.model_for(tier))
    elif policy_name in TIER_POLICIES:
        tier, reason = policy_name, f"policy: {policy_name}"
        model = catalogue.get(routing.model_for(tier))
    else:
        model = catalogue.get(policy_name)
        if model.kind != "chat":
            raise UnknownModelError(f"{policy_name} is an embedding model: send it to "
                                    "/v1/embeddings (Gateway.embed), or name a chat model",
                                    field="model", model=policy_name)
        tier, reason = model.tier, f"named model {policy_name}"
    if policy_name in TIER_POLICIES and refusals(request, model):
        # The decision would break what the request needs: override it, and say so.
        better = capable_model(request, catalogue, routing)
        if better is not None:
            lacking = ", ".join(dict.fromkeys(r.param for r in refusals(request, model)))
            reason = (f"{reason}; overridden: {model.name} cannot honour {lacking}, "
                      f"{better.name} can")
            model, tier = better, better.tier
    route = Route(tier=tier, model=model.name,
                  provider=model.provider, backend="gpu" if model.provider == "vllm" else "api",
                  lane=request.lane, reason=(note + reason)[:200], score=score)
    return _finish(request, catalogue, route, prompt_tokens, routing)


def _finish(request: ChatRequest, catalogue: Catalogue, route: Route,
            prompt_tokens: int | None, routing: RoutingSettings) -> Route:
    """Clamp the choice into the key's allow-list, drop what the model cannot honour (when
    allowed) and check the prompt fits."""
    if request.allowed_models is not None:
        route = _allowed(request, catalogue, routing, route)
    model = catalogue.get(route.model)
    dropped = dropped_params(request, model, catalogue)
    reason = route.reason
    if dropped:
        reason = f"{reason}; dropped {', '.join(dropped)}"
    if request.has_images:
        prompt_tokens = count_request(request, model)  # each provider counts images its way
    check_fits(request, model, prompt_tokens)
    return route.model_copy(update={"reason": reason[:200], "dropped": dropped})


def _allowed(request: ChatRequest, catalogue: Catalogue, routing: RoutingSettings,
              route: Route) -> Route:
    """``route`` inside the key's allow-list: its model clamped, its ladder's stronger rungs
    only those the key may use."""
    model, why = clamp(request, catalogue.get(route.model), catalogue, routing)
    rungs = tuple(m for m in route.escalation if may_use(request, m, routing))
    if not why and rungs == route.escalation:
        return route
    return route.model_copy(update={
        "model": model.name, "tier": model.tier, "provider": model.provider,
        "backend": "gpu" if model.provider == "vllm" else "api",
        "reason": (route.reason + why)[:200], "escalation": rungs})


def capable_model(request: ChatRequest, catalogue: Catalogue,
                  routing: RoutingSettings) -> ModelSpec | None:
    """The cheapest model that honours all of ``request``: the configured cheap tier, then
    the flagship, then any hosted catalogue model by list price; None when there is none."""
    tiers = [catalogue.models.get(routing.model_for(t)) for t in ("cheap", "flagship")]
    hosted = sorted((m for m in catalogue.models.values()
                     if m.backend == "api" and m.kind == "chat"),
                    key=lambda m: (m.price.input + m.price.output, m.name))
    for model in [m for m in tiers if m is not None] + hosted:
        if not refusals(request, model):
            return model
    return None


def _tier_for(score: float, policy: TierPolicy | None, threshold: float,
              router: str) -> tuple[str, str]:
    if policy is not None:
        decision = policy.decide(score)
        return str(decision.tier), str(getattr(decision, "reason", router))  # type: ignore[attr-defined]
    tier = "cheap" if score >= threshold else "flagship"
    return tier, f"{router}: score {score:.3f} {'>=' if tier == 'cheap' else '<'} {threshold}"


def check_fits(request: ChatRequest, model: ModelSpec, prompt_tokens: int | None = None) -> int:
    """Prompt tokens of ``request``; raises ContextLengthError when it cannot fit ``model``."""
    tokens = count_request(request, model) if prompt_tokens is None else prompt_tokens
    if tokens >= model.context:
        raise ContextLengthError(
            f"the prompt has about {tokens} tokens but {model.name} holds {model.context}; "
            "shorten the messages or pick a model with a longer context",
            field="messages", tokens=tokens, context=model.context)
    if tokens + request.max_tokens > model.context:
        room = model.context - tokens
        raise ContextLengthError(
            f"max_tokens={request.max_tokens} plus the prompt's {tokens} tokens exceeds "
            f"{model.name}'s context of {model.context}; set max_tokens to at most {room}",
            field="max_tokens", tokens=tokens, context=model.context)
    return tokens


def baseline_model(catalogue: Catalogue, routing: RoutingSettings) -> ModelSpec:
    """The all-flagship model used to price 'what it would have cost with no lever'."""
    try:
        return catalogue.get(routing.baseline_model)
    except ValidationError:
        return catalogue.get(routing.flagship_model)
