"""Drop-in fidelity through ``Gateway.complete()``: each parameter forwarded, translated for
Anthropic, or refused before any reservation; reasoning bounded by the reservation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from models.domain.errors import UnsupportedParameter
from queues.producer import connect

pytestmark = pytest.mark.integration
TOOLS = [{"name": "find_sku", "parameters": {"type": "object", "properties": {}}},
         {"name": "stock"}]


class Spy:
    """The real admission, with every reserved amount written down."""

    def __init__(self, real: Any) -> None:
        self.real, self.amounts = real, []  # type: list[Decimal]

    def reserve(self, request: Any, route: Any, amount: Decimal, within: Any = None) -> Any:
        self.amounts.append(amount)
        return self.real.reserve(request, route, amount, within=within) if self.real else None

    def reserve_once(self, request: Any, route: Any, amount: Decimal, within: Any = None
                     ) -> Any:
        self.amounts.append(amount)
        return (self.real.reserve_once(request, route, amount, within=within) if self.real
                else (None, False))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def spied(integration_settings: Any, celery_worker_proc: Any) -> Iterator[tuple[Any, Spy]]:
    gw = connect(integration_settings)
    spy = Spy(gw.admission)
    gw.admission = spy  # type: ignore[assignment]
    yield gw, spy
    gw.close()


def request(model: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    marker = uuid.uuid4().hex
    data = {"team": "catalog", "feature": "fidelity", "model": model, "max_tokens": 40,
            "messages": [{"role": "user", "content": f"Write a title ({marker})"}]}
    data.update(kw)
    return marker, data


def body_of(standin: Any, marker: str) -> dict[str, Any]:
    (got,) = standin.received(contains=marker)
    body: dict[str, Any] = got["body"]
    return body


def test_openai_parameters_are_forwarded(spied: tuple[Any, Spy], standin: Any) -> None:
    gw, _ = spied
    marker, data = request("gpt-4o-mini", seed=5, top_p=0.7, presence_penalty=1.0,
                           logit_bias={"9": 3}, static={"tools": TOOLS},
                           tool_choice={"mode": "function", "name": "stock"},
                           parallel_tool_calls=False, metadata={"k": "v"}, store=False,
                           prompt_cache_key="pk-1", logprobs=True, top_logprobs=1)
    result = gw.complete(data, timeout=30)
    body = body_of(standin, marker)
    assert (body["seed"], body["top_p"], body["presence_penalty"], body["logit_bias"],
            body["parallel_tool_calls"], body["metadata"], body["store"],
            body["prompt_cache_key"], body["top_logprobs"]) == (
        5, 0.7, 1.0, {"9": 3}, False, {"k": "v"}, False, "pk-1", 1)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "stock"}}
    assert [c.name for c in result.tool_calls] == ["stock"]
    assert result.logprobs is not None and result.route.dropped == ()


def test_anthropic_gets_translations(spied: tuple[Any, Spy], standin: Any) -> None:
    gw, _ = spied
    marker, data = request("claude-haiku-4-5", static={"tools": TOOLS},
                           tool_choice={"mode": "required"}, parallel_tool_calls=False,
                           top_p=0.5, stop=["END"], safety_identifier="h-1",
                           response_format="json_schema",
                           response_schema={"name": "t", "schema": {"type": "object"}})
    result = gw.complete(data, timeout=30)
    body = body_of(standin, marker)
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["top_p"] == 0.5 and "temperature" not in body
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "h-1"}
    assert body["output_config"] == {"format": {"type": "json_schema",
                                                "schema": {"type": "object"}}}
    assert result.tool_calls and result.finish_reason == "tool_calls"


@pytest.mark.parametrize(("model", "params", "field"), [
    ("claude-haiku-4-5", {"seed": 1}, "seed"),
    ("gpt-5-mini", {"presence_penalty": 0.1}, "presence_penalty"),
    ("gpt-4o-mini", {"thinking_budget": 2048, "max_tokens": 4000}, "thinking_budget"),
    ("sluice-tiny-llama", {"messages": [{"role": "user", "parts": [
        {"type": "image", "url": "https://img.example/a.png"}]}]}, "messages"),
])
def test_refused_before_any_reservation(spied: tuple[Any, Spy], standin: Any, model: str,
                                        params: dict[str, Any], field: str) -> None:
    gw, spy = spied
    marker, data = request(model, **params)
    before = len(spy.amounts)
    with pytest.raises(UnsupportedParameter) as exc:
        gw.submit(data)
    assert exc.value.field == field and len(spy.amounts) == before
    assert standin.received(contains=marker) == []


def test_drop_params_through_the_gateway(spied: tuple[Any, Spy], standin: Any) -> None:
    gw, _ = spied
    marker, data = request("claude-haiku-4-5", seed=1, verbosity="low", drop_params=True)
    result = gw.complete(data, timeout=30)
    assert result.route.dropped == ("seed", "verbosity")
    body = body_of(standin, marker)
    assert "seed" not in body and "verbosity" not in body


@pytest.mark.parametrize(("model", "params"), [
    ("gpt-5-mini", {"reasoning_effort": "high", "max_tokens": 600}),
    ("claude-sonnet-4-6", {"reasoning_effort": "medium", "max_tokens": 2500}),
    ("auto", {"reasoning_effort": "low", "max_tokens": 400}),
])
def test_reasoning_is_billed_as_output_within_the_reservation(spied: tuple[Any, Spy],
                                                              model: str,
                                                              params: dict[str, Any]) -> None:
    gw, spy = spied
    _, data = request(model, **params)
    result = gw.complete(data, timeout=30)
    assert 0 < result.usage.reasoning < result.usage.output <= params["max_tokens"]
    assert Decimal(0) < result.cost <= spy.amounts[-1]  # the reservation bounded the bill
    if model == "auto":  # the cheap tier does not reason: overridden, and recorded
        assert result.model == "gpt-5-mini" and "overridden" in result.route.reason
