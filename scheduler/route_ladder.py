"""Route a request of a feature with a ladder: wire the router and classifier to the climb."""

from __future__ import annotations

from typing import Any

from models.domain.catalogue import Catalogue
from models.domain.request import ChatRequest
from models.domain.result import Route
from models.domain.tokens import count_request
from scheduler.router.climb import ClassifyFn, ScoreFn, climb
from scheduler.router.ladder import FeatureLadder


def ladder_route(request: ChatRequest, catalogue: Catalogue, scorer: Any, ladders: Any,
                 prompt_tokens: int | None) -> tuple[Route | None, str]:
    """The ladder's Route for ``request`` (``auto`` or a tier name), or None with a note when
    the feature has no ladder or no rung can serve the request (the global tiers then do)."""
    ladder = ladders.for_feature(request.feature)
    if ladder is None:
        return None, ""
    ladder = moved_ladder(ladder, request.org, request.feature, getattr(scorer, "moves", None))
    tokens = count_request(request) if prompt_tokens is None else prompt_tokens
    decision = climb(ladder, request, catalogue, prompt_tokens=tokens, policy=request.model,
                     score=score_fn(scorer, ladder), classify=classify_fn(ladders, ladder))
    if decision is None:
        return None, f"ladder {ladder.feature}: no rung can serve the request; "
    model = decision.model
    return Route(tier=model.tier, model=model.name, provider=model.provider,
                 backend=model.backend, lane=request.lane, reason=decision.reason[:200],
                 score=decision.score, task_type=decision.task_type, rung=decision.rung,
                 escalation=decision.escalation), ""


def moved_ladder(ladder: FeatureLadder, org: str, feature: str, moves: Any) -> FeatureLadder:
    """``ladder`` at the target the quality floor moved ``org``'s ``feature`` to (as
    configured when it never moved); the response-cache key of ``auto`` carries the same
    move."""
    if moves is None:
        return ladder
    target = moves.thresholds().get((org, feature))
    return ladder if target is None else ladder.moved(target)


def score_fn(scorer: Any, ladder: FeatureLadder) -> ScoreFn | None:
    """How the ladder's requests are scored: its own router, else the feature's routing
    policy's (a RouterSet), else a plain scorer; None when nothing scores."""
    if scorer is None:
        return None
    if hasattr(scorer, "router_for"):
        from scheduler.router.policy import RoutingPolicy

        def by_policy(req: ChatRequest) -> tuple[float, str]:
            policy = (RoutingPolicy(router=ladder.router, artifact=ladder.artifact)
                      if ladder.router else scorer.policy_for(req.org, req.feature))
            router = scorer.router_for(policy)
            return float(router.score(req)), router.label
        return by_policy
    return lambda req: (float(scorer.score(req)), getattr(scorer, "name", "router"))


def classify_fn(ladders: Any, ladder: FeatureLadder) -> ClassifyFn | None:
    """The ladder's trained task-type classifier as a function (None when it has none)."""
    clf = ladders.classifier(ladder)
    if clf is None:
        return None
    return lambda req: clf.predict([req.last_user_text()])[0]
