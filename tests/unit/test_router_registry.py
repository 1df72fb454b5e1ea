"""Routers by name, one router per feature policy, and decisions that record score and threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.domain.errors import ConfigError
from models.domain.request import ChatRequest, Message
from ops.router.training import TrainConfig, fit_router
from scheduler.router.heuristic import HeuristicRouter
from scheduler.router.learned import LearnedRouter
from scheduler.router.policy import RoutingPolicy
from scheduler.router.random_router import RandomRouter
from scheduler.router.registry import RouterSet, build_router
from tests.unit.test_router_learned import labelled_set


def request(feature: str, text: str) -> ChatRequest:
    return ChatRequest(team="t", feature=feature, messages=(Message(role="user", content=text),))


def test_build_router_by_name(tmp_path: Path) -> None:
    assert isinstance(build_router("heuristic"), HeuristicRouter)
    assert isinstance(build_router("random", seed=3), RandomRouter)
    path = fit_router(labelled_set(120, seed=1), TrainConfig(min_df=1)).save(tmp_path / "a.npz")
    assert isinstance(build_router("learned", str(path)), LearnedRouter)
    with pytest.raises(ConfigError, match="artifact"):
        build_router("learned")
    with pytest.raises(ConfigError, match="unknown router"):
        build_router("gpt-judge")
    assert isinstance(build_router("learned", str(tmp_path / "none.npz"),
                                   fallback_to_heuristic=True), HeuristicRouter)


def test_random_router_is_seeded_and_uniform() -> None:
    a, b = RandomRouter(1), RandomRouter(2)
    prompts = [f"prompt {i}" for i in range(4000)]
    sa = [a.score_text(p) for p in prompts]
    assert sa == [RandomRouter(1).score_text(p) for p in prompts]
    assert sa != [b.score_text(p) for p in prompts]
    assert all(0.0 <= s < 1.0 for s in sa)
    assert abs(sum(s < 0.25 for s in sa) / len(sa) - 0.25) < 0.03


def test_router_set_swaps_router_and_policy_per_feature(tmp_path: Path) -> None:
    path = fit_router(labelled_set(200, seed=2), TrainConfig(min_df=1)).save(tmp_path / "l.npz")
    routers = RouterSet([
        RoutingPolicy(feature="chat", router="heuristic", threshold=0.5),
        RoutingPolicy(feature="search", router="learned", artifact=str(path), threshold=0.5),
        RoutingPolicy(feature="legal", forced_tier="flagship"),
        RoutingPolicy(feature="bulk", router="random", allowed_tiers=("self-hosted", "flagship"),
                      threshold=0.0),
    ])
    routers.warm()
    chat = routers.decide(request("chat", "Rephrase this: hello there."))
    heuristic = HeuristicRouter().label
    assert chat.router == heuristic and chat.tier == "cheap" and chat.threshold == 0.5
    search = routers.decide(request("search", "Design a fault-tolerant system and analyze it."))
    assert search.router.startswith("learned@") and search.score is not None
    legal = routers.decide(request("legal", "Rephrase this."))
    assert legal.tier == "flagship" and legal.score is None and legal.reason == "forced"
    assert routers.decide(request("bulk", "Summarize this.")).tier == "self-hosted"
    # Unknown features use the default policy (heuristic, threshold 0.5).
    assert routers.decide(request("other", "Rephrase this.")).router == heuristic
    # Each (router, artifact) is built once and shared.
    assert routers.router_for(routers.policy_for("default", "search")) is \
        routers.router_for(RoutingPolicy(router="learned", artifact=str(path)))
