"""Per-feature routing policies from settings reach the routing decision and its recorded reason."""

from __future__ import annotations

from typing import Any

from models.domain.catalogue import load_catalogue
from models.domain.request import parse_request
from models.domain.settings import load_settings
from queues.wiring import _router
from scheduler.route import decide_route

CAT = load_catalogue()


def req(feature: str, text: str, **kw: Any) -> Any:
    return parse_request({"team": "t", "feature": feature, "model": "auto",
                          "messages": [{"role": "user", "content": text}], **kw})


def test_feature_policies_from_env_pick_tiers() -> None:
    settings = load_settings({"SLUICE_ROUTING__POLICIES":
                              '[{"feature": "seo", "forced_tier": "flagship"},'
                              ' {"feature": "tags", "allowed_tiers": ["cheap"]}]'})
    routers = _router(settings)
    easy = "Rephrase this title: blue mug"
    seo = decide_route(req("seo", easy), CAT, settings.routing, scorer=routers)
    assert seo.tier == "flagship" and seo.model == "gpt-4o" and "forced" in seo.reason
    hard = ("Design a distributed, fault-tolerant payment system step by step, analyze the "
            "trade-offs and prove the consistency guarantees with code.")
    tags = decide_route(req("tags", hard), CAT, settings.routing, scorer=routers)
    assert tags.tier == "cheap"  # the only tier this feature allows


def test_default_policy_scores_with_the_heuristic_and_records_the_threshold() -> None:
    settings = load_settings({})
    routers = _router(settings)
    easy = decide_route(req("f", "Classify: red shoes"), CAT, settings.routing, scorer=routers)
    hard = decide_route(req("f", "Write a detailed 2,000-word article analyzing the design "
                                 "of a compiler, step by step, with code and proofs.",
                            max_tokens=3000), CAT, settings.routing, scorer=routers)
    assert easy.tier == "cheap" and hard.tier == "flagship"
    assert easy.score is not None and hard.score is not None and easy.score > hard.score
    assert "threshold 0.500" in easy.reason
