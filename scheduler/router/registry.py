"""Build routers by name, and keep one per (name, artifact) so each feature can use its own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.domain.errors import ConfigError
from models.domain.request import ChatRequest
from scheduler.router.base import Router
from scheduler.router.policy import RoutingPolicy, TierDecision

ROUTER_NAMES: tuple[str, ...] = ("heuristic", "learned", "random")


def build_router(name: str, artifact: str | None = None, *, seed: int = 0,
                 fallback_to_heuristic: bool = False) -> Router:
    """A router by registry name; ``learned`` needs the path of a trained artifact."""
    if name == "heuristic":
        from scheduler.router.heuristic import HeuristicRouter

        return HeuristicRouter()
    if name == "random":
        from scheduler.router.random_router import RandomRouter

        return RandomRouter(seed)
    if name == "learned":
        if not artifact:
            raise ConfigError("the learned router needs an artifact path; train one with "
                              "`sluice router train --out PATH`")
        # Imported here: numpy (and maybe torch) load only for features that use this router.
        from scheduler.router.heuristic import HeuristicRouter
        from scheduler.router.learned import load_router

        return load_router(artifact, fallback=HeuristicRouter() if fallback_to_heuristic else None)
    raise ConfigError(f"unknown router {name!r}; use one of {', '.join(ROUTER_NAMES)}")


class RouterSet:
    """The routers of a worker, keyed by feature policy; each artifact is loaded once."""

    def __init__(self, policies: Iterable[RoutingPolicy] = (),
                 default: RoutingPolicy | None = None, *, fallback_to_heuristic: bool = True,
                 moves: Any = None) -> None:
        self.policies = {p.feature: p for p in policies}
        #: The quality floor's moves (scheduler.quality_floor.MoveBook): an org's feature's
        #: threshold now, where the floor moved it; None: the configured policies only.
        self.moves = moves
        self.default = default or self.policies.get("*") or RoutingPolicy()
        self._fallback = fallback_to_heuristic
        self._routers: dict[tuple[str, str | None], Router] = {}

    def policy_for(self, org: str, feature: str) -> RoutingPolicy:
        """The feature's policy, else the default one, at the threshold the floor moved
        ``org``'s feature to (policies are the deployment's; moves are each org's own)."""
        policy = self.policies.get(feature, self.default)
        return policy if self.moves is None else self.moves.apply(org, feature, policy)

    def router_for(self, policy: RoutingPolicy) -> Router:
        """The (cached) router a policy names."""
        key = (policy.router, policy.artifact)
        if key not in self._routers:
            self._routers[key] = build_router(policy.router, policy.artifact,
                                              fallback_to_heuristic=self._fallback)
        return self._routers[key]

    def warm(self) -> None:
        """Build every router now (call at worker start, so no request pays for a load)."""
        for policy in [self.default, *self.policies.values()]:
            if policy.needs_score:
                self.router_for(policy)

    def decide(self, request: ChatRequest) -> TierDecision:
        """Score ``request`` with its feature's router (only if needed) and pick its tier."""
        policy = self.policy_for(request.org, request.feature)
        if not policy.needs_score:
            return policy.decide(None)
        router = self.router_for(policy)
        return policy.decide(router.score(request), router=router.label)
