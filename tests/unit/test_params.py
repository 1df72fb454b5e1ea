"""Which parameters each model honours, and routing that never breaks what a request needs."""

from __future__ import annotations

from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import UnsupportedParameter
from models.domain.params import dropped_params, refusals, thinking_budget
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings
from scheduler.route import decide_route

CAT = load_catalogue()
TOOLS = {"tools": [{"name": "find_sku"}]}
URL_IMAGE = {"type": "image", "url": "https://img.example/shoe.png"}


def req(**kw: Any) -> Any:
    data: dict[str, Any] = {"team": "t", "feature": "f", "max_tokens": 50,
                            "messages": [{"role": "user", "content": "Describe it"}]}
    data.update(kw)
    return parse_request(data)


def refused(model: str, **kw: Any) -> set[str]:
    return {r.param for r in refusals(req(**kw), CAT.get(model))}


# (params, models that must honour them, models that must refuse them, the param refused)
CASES: list[tuple[dict[str, Any], list[str], list[str], str]] = [
    ({"seed": 7}, ["gpt-4o", "gpt-5-mini"], ["claude-haiku-4-5", "sluice-tiny-llama"], "seed"),
    ({"top_p": 0.5}, ["gpt-4o", "claude-sonnet-4-6"], ["gpt-5-mini", "sluice-tiny-llama"],
     "top_p"),
    ({"top_p": 0.5, "temperature": 0.3}, ["gpt-4o"], ["claude-sonnet-4-6"], "top_p"),
    ({"presence_penalty": 0.5}, ["gpt-4o-mini"], ["gpt-5", "claude-opus-4-7"],
     "presence_penalty"),
    ({"frequency_penalty": 0.5}, ["gpt-4.1"], ["gpt-5", "claude-opus-4-7"], "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, ["gpt-4o"], ["gpt-5-mini", "claude-haiku-4-5"],
     "logit_bias"),
    ({"logprobs": True, "top_logprobs": 3}, ["gpt-4o-mini"], ["gpt-5", "claude-haiku-4-5"],
     "logprobs"),
    ({"temperature": 0.2}, ["gpt-4o", "claude-haiku-4-5"], ["gpt-5-mini"], "temperature"),
    ({"temperature": 1.5}, ["gpt-4o"], ["claude-haiku-4-5"], "temperature"),
    ({"reasoning_effort": "minimal"}, ["gpt-5-mini"], ["gpt-4o", "claude-sonnet-4-6"],
     "reasoning_effort"),
    ({"reasoning_effort": "high", "max_tokens": 4000}, ["gpt-5", "claude-sonnet-4-6"],
     ["gpt-4o-mini"], "reasoning_effort"),
    # Claude thinks within max_tokens: 50 leaves no room for a 1024-token budget.
    ({"reasoning_effort": "low"}, ["gpt-5-mini"], ["claude-sonnet-4-6"], "reasoning_effort"),
    ({"thinking_budget": 2048, "max_tokens": 4000}, ["claude-haiku-4-5", "gpt-5"], ["gpt-4o"],
     "thinking_budget"),
    ({"verbosity": "low"}, ["gpt-5"], ["gpt-4o", "claude-haiku-4-5"], "verbosity"),
    ({"prediction": {"content": "Dear"}}, ["gpt-4o"], ["gpt-5", "claude-haiku-4-5"],
     "prediction"),
    ({"response_format": "json"}, ["gpt-4o", "sluice-tiny-llama"], ["claude-haiku-4-5"],
     "response_format"),
    ({"response_format": "json_schema", "response_schema": {"schema": {"type": "object"}}},
     ["gpt-4o", "claude-haiku-4-5"], ["sluice-tiny-llama"], "response_format"),
    ({"static": TOOLS, "tool_choice": {"mode": "required"}}, ["gpt-4o", "claude-haiku-4-5"],
     ["sluice-tiny-llama"], "tool_choice"),
    ({"static": TOOLS, "tool_choice": {"mode": "function", "name": "find_sku"},
      "reasoning_effort": "low", "max_tokens": 4000}, ["gpt-5-mini"], ["claude-sonnet-4-6"],
     "tool_choice"),
    ({"store": True}, ["gpt-4o"], ["claude-haiku-4-5"], "store"),
    # Anthropic gets it as metadata.user_id; Gemini and the self-hosted pool have no such id.
    ({"safety_identifier": "h-1"}, ["gpt-4o", "claude-haiku-4-5"],
     ["gemini-2.5-flash", "sluice-tiny-llama"], "safety_identifier"),
    ({"metadata": {"order": "42"}}, ["gpt-4o"], ["claude-haiku-4-5"], "metadata"),
    ({"service_tier": "priority"}, [], ["gpt-4o", "claude-haiku-4-5"], "service_tier"),
    ({"messages": [{"role": "user", "parts": [{"type": "text", "text": "What?"}, URL_IMAGE]}]},
     ["gpt-4o-mini", "claude-haiku-4-5", "gpt-5"], ["sluice-tiny-llama"], "messages"),
    ({"max_tokens": 20000}, ["gpt-4.1", "claude-haiku-4-5"], ["gpt-4o"], "max_tokens"),
]


@pytest.mark.parametrize(("params", "honour", "refuse", "param"), CASES)
def test_each_parameter_is_honoured_or_refused_per_model(params: dict[str, Any],
                                                        honour: list[str], refuse: list[str],
                                                        param: str) -> None:
    for model in honour:
        assert refused(model, **params) == set(), model
    for model in refuse:
        assert param in refused(model, **params), model


@pytest.mark.parametrize("params", [
    {"metadata": {"user_id": "u1"}}, {"store": False}, {"service_tier": "default"},
    {"safety_identifier": "h1"}, {"prompt_cache_key": "mine"}, {"reasoning_effort": "none"},
    {"static": TOOLS, "tool_choice": {"mode": "none"}, "parallel_tool_calls": False}])
def test_what_anthropic_translates_is_not_refused(params: dict[str, Any]) -> None:
    assert refused("claude-haiku-4-5", **params) == set()


def test_a_named_model_that_lacks_it_is_a_400_naming_param_and_who_accepts_it() -> None:
    with pytest.raises(UnsupportedParameter) as exc:
        decide_route(req(model="claude-haiku-4-5", seed=7), CAT, RoutingSettings())
    err = exc.value
    assert err.field == "seed" and "claude-haiku-4-5" in err.message
    assert "gpt-4o" in err.details["accepted_by"] and "claude-sonnet-4-6" not in \
        err.details["accepted_by"]
    assert "x-sluice-drop-params" in err.message


def test_drop_params_drops_and_says_what() -> None:
    route = decide_route(req(model="claude-haiku-4-5", seed=7, logit_bias={"1": 5},
                             drop_params=True), CAT, RoutingSettings())
    assert route.model == "claude-haiku-4-5" and route.dropped == ("seed", "logit_bias")
    assert "dropped seed, logit_bias" in route.reason
    # The prompt and its limits are never dropped.
    with pytest.raises(UnsupportedParameter):
        decide_route(req(model="sluice-tiny-llama", drop_params=True, messages=[
            {"role": "user", "parts": [{"type": "text", "text": "x"}, URL_IMAGE]}]), CAT,
            RoutingSettings())


def test_auto_goes_to_the_cheapest_capable_model_and_records_why() -> None:
    # The cheap tier (gpt-4o-mini) does not reason: the override is recorded in the reason.
    route = decide_route(req(model="auto", reasoning_effort="low"), CAT, RoutingSettings())
    assert route.model == "gpt-5-mini"
    assert "overridden: gpt-4o-mini cannot honour reasoning_effort" in route.reason
    # An image request forced to the self-hosted tier goes to the cheapest tier that sees.
    image = [{"role": "user", "parts": [{"type": "text", "text": "What?"}, URL_IMAGE]}]
    route = decide_route(req(model="self-hosted", messages=image), CAT, RoutingSettings())
    assert route.model == "gpt-4o-mini" and route.backend == "api"
    # Nothing needs overriding: the decision stands, and the reason says nothing of it.
    plain = decide_route(req(model="cheap"), CAT, RoutingSettings())
    assert plain.model == "gpt-4o-mini" and "overridden" not in plain.reason


def test_no_capable_model_is_a_400_naming_the_parameter() -> None:
    with pytest.raises(UnsupportedParameter) as exc:
        decide_route(req(model="auto", service_tier="flex"), CAT, RoutingSettings())
    assert exc.value.field == "service_tier" and "no model in the catalogue" in \
        exc.value.message


def test_efforts_become_thinking_budgets_within_max_tokens() -> None:
    assert thinking_budget(req(reasoning_effort="high", max_tokens=64000)) == 24576
    assert thinking_budget(req(reasoning_effort="high", max_tokens=6000)) == 3000
    assert thinking_budget(req(reasoning_effort="low", max_tokens=1500)) == 1024
    assert thinking_budget(req(reasoning_effort="none", max_tokens=6000)) is None
    assert thinking_budget(req(thinking_budget=5000, max_tokens=6000)) == 5000
    assert dropped_params(req(reasoning_effort="low", max_tokens=1025),
                          CAT.get("claude-haiku-4-5")) == ()
    with pytest.raises(UnsupportedParameter) as exc:
        dropped_params(req(reasoning_effort="low", max_tokens=1024),
                       CAT.get("claude-haiku-4-5"))
    assert "max_completion_tokens" in exc.value.message


def test_a_default_temperature_is_ours_not_the_callers() -> None:
    # gpt-5 takes no temperature: ours (0, unset by the caller) is simply not sent.
    assert refused("gpt-5") == set()
    assert refused("gpt-5", temperature=1.0) == set()
    assert refused("gpt-5", temperature=0.0) == {"temperature"}
