"""Request validation: bad input is refused with a typed error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import ContextLengthError, UnknownModelError, ValidationError
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings
from scheduler.route import decide_route

CAT = load_catalogue()


def req(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"team": "t", "feature": "f",
                            "messages": [{"role": "user", "content": "hi"}]}
    base.update(kw)
    return base


@pytest.mark.parametrize("bad, field", [
    ({"lane": "urgent"}, "lane"),
    ({"messages": []}, "messages"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"team": ""}, "team"),
    ({"feature": "has space"}, "feature"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"colour": "blue"}, "colour"),
    ({"request_id": "a b"}, "request_id"),
    ({"messages": [{"role": "tool", "content": "12.50"}]}, "messages.0"),  # no tool_call_id
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""},
                   {"role": "user", "content": "b"}]}, "messages.1"),  # says nothing
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "name": "f", "arguments": "not json"}]}, {"role": "user", "content": "b"}]},
     "messages.1"),
    ({"messages": [{"role": "user", "content": "q", "tool_call_id": "c1"}]}, "messages.0"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f"}]}]},
     "messages"),  # the last turn must be the user's or a tool's
    ({"static": {"few_shot": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}},
     "static.few_shot"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "name": "f", "arguments": "[" * 100_000}]},  # past the parser's depth
        {"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "messages.1"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "name": "f"}, {"id": "c1", "name": "g"}]},  # one id twice
        {"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "messages.1"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "name": "no spaces please"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "messages.1"),
    ({"messages": [{"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "q"},  # c2 is never answered
                   {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f"},
                                                        {"id": "c2", "name": "f"}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "x"},
                   {"role": "user", "content": "b"}]}, "messages"),
])
def test_bad_fields_are_named(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_request(req(**bad))
    assert exc.value.field == field
    assert field in str(exc.value)


def test_unknown_lane_lists_the_lanes() -> None:
    with pytest.raises(ValidationError, match="interactive, async"):
        parse_request(req(lane="urgent"))


def test_last_turn_must_be_user() -> None:
    with pytest.raises(ValidationError, match="role 'user'"):
        parse_request(req(messages=[{"role": "user", "content": "a"},
                                    {"role": "assistant", "content": "b"}]))


def test_not_a_mapping() -> None:
    with pytest.raises(ValidationError, match="mapping"):
        parse_request(["hello"])  # type: ignore[arg-type]


def test_unknown_model_is_refused_at_routing() -> None:
    r = parse_request(req(model="gpt-17"))
    with pytest.raises(UnknownModelError) as exc:
        decide_route(r, CAT, RoutingSettings())
    assert exc.value.field == "model" and "gpt-4o-mini" in exc.value.message


def test_prompt_over_context_is_refused() -> None:
    r = parse_request(req(model="sluice-tiny-llama", messages=[
        {"role": "user", "content": "word " * 5000}]))
    with pytest.raises(ContextLengthError) as exc:
        decide_route(r, CAT, RoutingSettings())
    assert exc.value.field == "messages"


def test_max_tokens_over_context_names_max_tokens() -> None:
    r = parse_request(req(model="sluice-tiny-llama", max_tokens=4000))
    with pytest.raises(ContextLengthError) as exc:
        decide_route(r, CAT, RoutingSettings())
    assert exc.value.field == "max_tokens" and "at most" in exc.value.message


@pytest.mark.parametrize("policy, tier, model", [
    ("cheap", "cheap", "gpt-4o-mini"), ("flagship", "flagship", "gpt-4o"),
    ("self-hosted", "self-hosted", "sluice-tiny-llama"),
    ("claude-haiku-4-5", "cheap", "claude-haiku-4-5")])
def test_policies_resolve_to_models(policy: str, tier: str, model: str) -> None:
    route = decide_route(parse_request(req(model=policy)), CAT, RoutingSettings())
    assert (route.tier, route.model) == (tier, model)
    assert route.queue == f"interactive.{'gpu' if tier == 'self-hosted' else 'api'}"


def test_request_round_trips_through_json() -> None:
    shots = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    r = parse_request(req(static={"system": "s", "few_shot": shots,
                                  "tools": [{"name": "lookup", "description": "d"}]}))
    again = parse_request(r.model_dump(mode="json"))
    assert again == r


def test_a_tool_loop_is_a_valid_conversation_and_the_router_reads_the_users_ask() -> None:
    r = parse_request(req(messages=[
        {"role": "user", "content": "What does SKU 42 cost?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "find_sku",
                                              "arguments": '{"sku": "42"}'}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"price": "12.50"}'}]))
    assert r.messages[-1].role == "tool" and r.last_user_text() == "What does SKU 42 cost?"
    assert "find_sku" in r.prompt_text() and "12.50" in r.prompt_text()
    assert r.messages[1].to_openai() == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "find_sku", "arguments": '{"sku": "42"}'}}]}
    assert r.messages[2].to_openai() == {"role": "tool", "content": '{"price": "12.50"}',
                                         "tool_call_id": "c1"}
