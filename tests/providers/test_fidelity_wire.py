"""Every chat parameter on the wire: what each provider received, through the official SDKs.

The stand-in records each body it receives; these tests assert it got the parameter as sent
(OpenAI) or as the README's table translates it (Anthropic), and that what a model cannot
honour never leaves the gateway. The hypothesis property at the end checks the table itself
over random parameter sets.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.errors import UnsupportedParameter
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings
from models.domain.tokens import count_request, input_bound, prompt_count
from scheduler.route import decide_route
from workers.providers.anthropic_messages import AnthropicMessagesProvider
from workers.providers.base import ProviderCall
from workers.providers.openai_chat import OpenAIChatProvider

CAT = load_catalogue()
TOOLS = [{"name": "find_sku", "description": "Look a product up.",
          "parameters": {"type": "object", "properties": {"request": {"type": "string"}}}},
         {"name": "stock", "parameters": {"type": "object", "properties": {}}}]
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"},
                                           "price": {"type": "number"}},
          "required": ["title", "price"], "additionalProperties": False}


@pytest.fixture(scope="module")
def providers(standin: Any) -> Iterator[dict[str, Any]]:
    found = {"openai": OpenAIChatProvider(api_key="sk-test", base_url=standin.openai_base_url,
                                          timeout=10),
             "anthropic": AnthropicMessagesProvider(api_key="sk-ant-test", timeout=10,
                                                    base_url=standin.anthropic_base_url)}
    yield found
    for p in found.values():
        p.close()


def send(standin: Any, providers: dict[str, Any], model: str, text: str = "Describe it",
         marker: str | None = None, **kw: Any) -> tuple[Any, dict[str, Any], Any]:
    """Call ``model`` through its adapter; the reply, the body the stand-in got, the request."""
    marker = marker or uuid.uuid4().hex
    data: dict[str, Any] = {"team": "t", "feature": "f", "max_tokens": 60, "model": model,
                            "messages": [{"role": "user", "content": f"{text} ({marker})"}]}
    data.update(kw)
    request = parse_request(data)
    spec = CAT.get(model)
    reply = providers[spec.provider].complete(ProviderCall(request=request, model=spec,
                                                           cache_scope="o/t/f"))
    (got,) = standin.received(contains=marker)
    return reply, got["body"], request


FORWARDED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("gpt-4o", {"seed": 7}, {"seed": 7}),
    ("gpt-4o", {"top_p": 0.3}, {"top_p": 0.3}),
    ("gpt-4o", {"presence_penalty": 0.5, "frequency_penalty": -0.25},
     {"presence_penalty": 0.5, "frequency_penalty": -0.25}),
    ("gpt-4o", {"logit_bias": {"50256": -100}}, {"logit_bias": {"50256": -100}}),
    ("gpt-4o-mini", {"logprobs": True, "top_logprobs": 2}, {"logprobs": True, "top_logprobs": 2}),
    ("gpt-4o-mini", {"static": {"tools": TOOLS}, "parallel_tool_calls": False},
     {"parallel_tool_calls": False}),
    ("gpt-4o-mini", {"static": {"tools": TOOLS}, "tool_choice": {"mode": "none"}},
     {"tool_choice": "none"}),
    ("gpt-4o-mini", {"static": {"tools": TOOLS}, "tool_choice": {"mode": "required"}},
     {"tool_choice": "required"}),
    ("gpt-4o-mini", {"static": {"tools": TOOLS},
                     "tool_choice": {"mode": "function", "name": "stock"}},
     {"tool_choice": {"type": "function", "function": {"name": "stock"}}}),
    ("gpt-5-mini", {"reasoning_effort": "minimal"}, {"reasoning_effort": "minimal"}),
    ("gpt-5", {"verbosity": "low", "reasoning_effort": "low"},
     {"verbosity": "low", "reasoning_effort": "low"}),
    ("gpt-5-mini", {"thinking_budget": 20000}, {"reasoning_effort": "high"}),
    ("gpt-4o", {"prediction": {"content": "Dear customer"}},
     {"prediction": {"type": "content", "content": "Dear customer"}}),
    ("gpt-4o", {"service_tier": "default", "store": True, "metadata": {"order": "42"},
                "safety_identifier": "h-u42"},
     {"service_tier": "default", "store": True, "metadata": {"order": "42"},
      "safety_identifier": "h-u42"}),
    ("gpt-4o", {"static": {"system": "Be brief."}, "prompt_cache_key": "callers-own"},
     {"prompt_cache_key": "callers-own"}),
    ("gpt-4o", {"response_format": "json_schema",
                "response_schema": {"name": "item", "schema": SCHEMA, "strict": True}},
     {"response_format": {"type": "json_schema", "json_schema": {
         "name": "item", "schema": SCHEMA, "strict": True}}}),
    ("gpt-4o-mini", {"max_tokens": 33, "stop": ["END"]},
     {"max_completion_tokens": 33, "stop": ["END"]}),
]


@pytest.mark.parametrize(("model", "params", "wire"), FORWARDED)
def test_openai_gets_each_parameter_as_sent(standin: Any, providers: dict[str, Any],
                                            model: str, params: dict[str, Any],
                                            wire: dict[str, Any]) -> None:
    _, body, _ = send(standin, providers, model, **params)
    assert {k: body.get(k) for k in wire} == wire


TRANSLATED: list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ({"static": {"tools": TOOLS}, "tool_choice": {"mode": "auto"}},
     {"tool_choice": {"type": "auto"}}, ()),
    ({"static": {"tools": TOOLS}, "tool_choice": {"mode": "none"}},
     {"tool_choice": {"type": "none"}}, ()),
    ({"static": {"tools": TOOLS}, "tool_choice": {"mode": "required"},
      "parallel_tool_calls": False},
     {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}}, ()),
    ({"static": {"tools": TOOLS}, "tool_choice": {"mode": "function", "name": "stock"}},
     {"tool_choice": {"type": "tool", "name": "stock"}}, ()),
    ({"static": {"tools": TOOLS}, "parallel_tool_calls": False},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}, ()),
    ({"reasoning_effort": "medium", "max_tokens": 20000},
     {"thinking": {"type": "enabled", "budget_tokens": 8192}}, ("temperature",)),
    ({"thinking_budget": 1500, "max_tokens": 2000},
     {"thinking": {"type": "enabled", "budget_tokens": 1500}}, ("temperature",)),
    ({"top_p": 0.4}, {"top_p": 0.4}, ("temperature",)),
    ({"temperature": 0.7}, {"temperature": 0.7}, ("top_p",)),
    ({"stop": ["END", "STOP"]}, {"stop_sequences": ["END", "STOP"]}, ()),
    ({"response_format": "json_schema", "response_schema": {"name": "item", "schema": SCHEMA}},
     {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}, ()),
    ({"user": "u42", "safety_identifier": "h-u42"}, {"metadata": {"user_id": "h-u42"}}, ()),
    ({"metadata": {"user_id": "m-7"}, "store": False, "prompt_cache_key": "mine"},
     {"metadata": {"user_id": "m-7"}}, ("store", "prompt_cache_key")),
    ({"service_tier": "default"}, {"service_tier": "standard_only"}, ()),
]


@pytest.mark.parametrize(("params", "wire", "absent"), TRANSLATED)
def test_anthropic_gets_the_translation(standin: Any, providers: dict[str, Any],
                                        params: dict[str, Any], wire: dict[str, Any],
                                        absent: tuple[str, ...]) -> None:
    _, body, _ = send(standin, providers, "claude-sonnet-4-6", **params)
    assert {k: body.get(k) for k in wire} == wire
    assert not set(absent) & set(body)


def test_the_stand_in_obeys_tool_choice_in_both_wire_formats(standin: Any,
                                                             providers: dict[str, Any]) -> None:
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        forced, _, _ = send(standin, providers, model, "Describe it", static={"tools": TOOLS},
                            tool_choice={"mode": "required"})
        assert forced.finish_reason == "tool_calls" and forced.tool_calls[0].name == "find_sku"
        named, _, _ = send(standin, providers, model, "Please use tool find_sku",
                           static={"tools": TOOLS},
                           tool_choice={"mode": "function", "name": "stock"})
        assert [c.name for c in named.tool_calls] == ["stock"]
        never, _, _ = send(standin, providers, model, "Please use tool find_sku",
                           static={"tools": TOOLS}, tool_choice={"mode": "none"})
        assert never.tool_calls == () and never.text


def test_reasoning_tokens_are_output_within_max_completion_tokens(
        standin: Any, providers: dict[str, Any]) -> None:
    for model, params in [("gpt-5-mini", {"reasoning_effort": "high", "max_tokens": 2000}),
                          ("claude-sonnet-4-6", {"reasoning_effort": "low", "max_tokens": 3000})]:
        reply, body, request = send(standin, providers, model, **params)
        u = reply.usage
        assert 0 < u.reasoning < u.output <= request.max_tokens, model
        assert reply.text  # the visible answer is there beside the reasoning
        spec = CAT.get(model)
        # Billed at the output price, every reasoning token included.
        assert cost_of(u, spec) == ((u.input_total * spec.price.input + u.output
                                     * spec.price.output) / Decimal(1_000_000)).quantize(
            Decimal("1e-12"))
    # A reasoning model thinks within max_completion_tokens, even at the cost of the answer.
    reply, _, _ = send(standin, providers, "gpt-5-mini", reasoning_effort="high", max_tokens=40)
    assert reply.usage.output == 40 == reply.usage.reasoning and reply.finish_reason == "length"


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (9, 99, 199)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-5",
                                   "claude-haiku-4-5"])
def test_images_reach_the_provider_and_are_counted_as_it_bills(
        standin: Any, providers: dict[str, Any], model: str) -> None:
    marker = uuid.uuid4().hex
    parts = [{"type": "text", "text": f"Write a product title ({marker})"},
             {"type": "image", "url": _png(1400, 900), "detail": "high"},
             {"type": "image", "url": "https://img.example/shoe.png", "detail": "low"}]
    reply, body, request = send(standin, providers, model, marker=marker, messages=[
        {"role": "user", "parts": parts}])
    spec = CAT.get(model)
    # The reservation's count covers the provider's bill, image tokens included: exactly for
    # OpenAI; Claude's text counts more (the stand-in is Claude-shaped), within its bound.
    if spec.provider == "openai":
        assert reply.usage.input_total == count_request(request, spec)
    else:
        bound = input_bound(prompt_count(request, spec), spec.bound)
        # (Not above our count: Claude's tokenizer may count a random marker in fewer.)
        assert reply.usage.input_total <= bound
    assert reply.usage.input_total > count_request(request.model_copy(update={"messages": (
        request.messages[0].model_copy(update={"parts": ()}),)}), spec) + 80
    sent = json.dumps(body)
    assert "img.example/shoe.png" in sent and "sha256:" in sent  # bytes went, as a hash here


def test_json_schema_answers_follow_the_schema(standin: Any,
                                               providers: dict[str, Any]) -> None:
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        reply, _, _ = send(standin, providers, model, response_format="json_schema",
                           response_schema={"name": "item", "schema": SCHEMA, "strict": True})
        answer = json.loads(reply.text)
        assert set(answer) == {"title", "price"} and isinstance(answer["price"], int)


def test_logprobs_come_back_per_token(standin: Any, providers: dict[str, Any]) -> None:
    reply, _, _ = send(standin, providers, "gpt-4o-mini", logprobs=True, top_logprobs=3)
    assert reply.logprobs and "".join(t["token"] for t in reply.logprobs) == reply.text
    assert all(len(t["top_logprobs"]) == 3 for t in reply.logprobs)


# --- the README table, as a property -------------------------------------------------------

#: What OpenAI is sent for each set parameter (README: "forwarded").
_OPENAI_NAMES = ("top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
                 "logprobs", "top_logprobs", "verbosity", "store", "metadata",
                 "safety_identifier", "service_tier", "reasoning_effort", "parallel_tool_calls")


def expected_wire(request: Any, model: Any, dropped: tuple[str, ...]) -> dict[str, Any]:
    """The README's table: the keys the provider must receive, and their values (None: must
    be absent), given what the caller allowed to be dropped."""
    out: dict[str, Any] = {name: None for name in dropped if name != "metadata"}
    kept = {name for name in type(request).model_fields if name not in dropped}
    if model.provider == "openai":
        out["max_completion_tokens"] = request.max_tokens
        for name in _OPENAI_NAMES:
            if name == "reasoning_effort" and not model.can("reasoning"):
                continue  # "none" to a model that does not reason: nothing to send
            if getattr(request, name) is not None and name in kept:
                out[name] = getattr(request, name)
        if request.tool_choice is not None and "tool_choice" in kept:
            c = request.tool_choice
            out["tool_choice"] = (c.mode if c.mode != "function"
                                  else {"type": "function", "function": {"name": c.name}})
        if request.prompt_cache_key:
            out["prompt_cache_key"] = request.prompt_cache_key
        return out
    out["max_tokens"] = request.max_tokens
    effort = request.reasoning_effort
    if effort not in (None, "none") and "reasoning_effort" in kept:
        budget = max(1024, min({"minimal": 1024, "low": 2048, "medium": 8192,
                                "high": 24576}[effort], request.max_tokens // 2))
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out["temperature"] = None
    elif request.top_p is not None and "top_p" in kept:
        out["top_p"], out["temperature"] = request.top_p, None
    elif "temperature" in kept:
        out["temperature"], out["top_p"] = min(request.temperature, 1.0), None
    choice = request.tool_choice if "tool_choice" in kept else None
    tool_choice = None if choice is None else {
        "type": {"auto": "auto", "none": "none", "required": "any", "function": "tool"}[
            choice.mode], **({"name": choice.name} if choice.mode == "function" else {})}
    if request.parallel_tool_calls is False and (tool_choice or {}).get("type") != "none":
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    out["tool_choice"] = tool_choice
    user = request.safety_identifier or (request.metadata or {}).get("user_id") or request.user
    out["metadata"] = {"user_id": user} if user else None
    if request.service_tier in ("auto", "default"):
        out["service_tier"] = {"auto": "auto", "default": "standard_only"}[request.service_tier]
    for name in ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                 "verbosity", "store", "safety_identifier", "prompt_cache_key"):
        out[name] = None  # no equivalent: never on Anthropic's wire
    return out


PARAMS = st.fixed_dictionaries({}, optional={
    "temperature": st.sampled_from([0.0, 0.5, 1.0, 1.5]),
    "top_p": st.sampled_from([0.1, 0.96]),
    "seed": st.integers(0, 2**31),
    "presence_penalty": st.sampled_from([-1.0, 0.5]),
    "frequency_penalty": st.sampled_from([0.25]),
    "logit_bias": st.just({"42": -50}),
    "logprobs": st.just(True),
    "tool_choice": st.sampled_from([{"mode": "auto"}, {"mode": "none"}, {"mode": "required"},
                                    {"mode": "function", "name": "stock"}]),
    "parallel_tool_calls": st.booleans(),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
    "verbosity": st.sampled_from(["low", "high"]),
    "service_tier": st.sampled_from(["auto", "default", "priority"]),
    "metadata": st.sampled_from([{"user_id": "m1"}, {"order": "9"}]),
    "store": st.booleans(),
    "safety_identifier": st.just("h-9"),
    "prompt_cache_key": st.just("ck-1"),
    "max_tokens": st.sampled_from([50, 1500, 5000]),
    "drop_params": st.booleans(),
})


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(params=PARAMS, model=st.sampled_from(["gpt-4o-mini", "gpt-5-mini", "claude-haiku-4-5",
                                             "claude-sonnet-4-6", "auto"]))
def test_refused_before_anything_is_sent_or_received_as_the_table_says(
        standin: Any, providers: dict[str, Any], params: dict[str, Any], model: str) -> None:
    marker = uuid.uuid4().hex
    request = parse_request({"team": "t", "feature": "f", "model": model,
                             "static": {"tools": TOOLS},
                             "messages": [{"role": "user", "content": f"Hi ({marker})"}],
                             **params})
    try:
        route = decide_route(request, CAT, RoutingSettings())
    except UnsupportedParameter as err:
        assert err.field in params or err.field in ("response_format", "temperature")
        assert standin.received(contains=marker) == []  # refused: nothing was sent
        return
    spec = CAT.get(route.model)
    providers[spec.provider].complete(ProviderCall(request=request, model=spec))
    (got,) = standin.received(contains=marker)
    wire = expected_wire(request, spec, route.dropped)
    assert {k: got["body"].get(k) for k in wire} == wire
