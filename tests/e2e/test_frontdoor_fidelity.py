"""Drop-in fidelity through the official openai SDK: every chat parameter is forwarded as sent,
translated for Anthropic, or refused with a 400 naming it; images and reasoning models too.

The stand-in records what each provider received (``standin.received``), so each test checks
the wire, not just the answer.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from decimal import Decimal
from typing import Any

import openai
import pytest
from PIL import Image

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.request import parse_request
from models.domain.tokens import count_request, input_bound, prompt_count
from models.domain.usage import Usage
from tests.e2e.frontdoor_support import row

pytestmark = pytest.mark.integration
CAT = load_catalogue()
TOOLS = [{"type": "function", "function": {
    "name": "find_sku", "description": "Look a product up by its SKU.",
    "parameters": {"type": "object", "properties": {"request": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "stock", "parameters": {"type": "object"}}}]
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}},
          "required": ["title"], "additionalProperties": False}


def ask(text: str = "Write a title") -> tuple[str, list[dict[str, Any]]]:
    marker = uuid.uuid4().hex
    return marker, [{"role": "user", "content": f"{text} ({marker})"}]


def wire(standin: Any, marker: str) -> dict[str, Any]:
    (got,) = standin.received(contains=marker)
    body: dict[str, Any] = got["body"]
    return body


def test_openai_parameters_reach_openai_as_sent(client: openai.OpenAI, standin: Any,
                                                sessions: Any) -> None:
    marker, messages = ask()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, max_completion_tokens=40, seed=11, top_p=0.9,
        presence_penalty=0.5, frequency_penalty=0.25, logit_bias={"50256": -100},
        logprobs=True, top_logprobs=2, tools=TOOLS, parallel_tool_calls=False,
        tool_choice="auto", stop=["END"], service_tier="default", metadata={"order": "42"},
        store=True, safety_identifier="hash-u42", prompt_cache_key="my-own-key",
        user="u42")
    completion = raw.parse()
    body = wire(standin, marker)
    sent = {"max_completion_tokens": 40, "seed": 11, "top_p": 0.9, "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "logit_bias": {"50256": -100}, "logprobs": True,
            "top_logprobs": 2, "parallel_tool_calls": False, "tool_choice": "auto",
            "stop": ["END"], "service_tier": "default", "metadata": {"order": "42"},
            "store": True, "safety_identifier": "hash-u42", "user": "u42",
            # The caller's own prompt-cache key wins over the one sluicegate derives.
            "prompt_cache_key": "my-own-key"}
    assert {k: body.get(k) for k in sent} == sent
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == completion.choices[0].message.content
    assert "x-sluice-dropped-params" not in raw.headers
    assert row(sessions, raw.headers["x-sluice-request-id"]).outcome == "ok"


@pytest.mark.parametrize(("choice", "openai_wire", "anthropic_wire", "called"), [
    ("none", "none", {"type": "none"}, None),
    ("required", "required", {"type": "any"}, "find_sku"),
    ({"type": "function", "function": {"name": "stock"}},
     {"type": "function", "function": {"name": "stock"}}, {"type": "tool", "name": "stock"},
     "stock")])
def test_tool_choice_in_every_form(client: openai.OpenAI, standin: Any, choice: Any,
                                   openai_wire: Any, anthropic_wire: Any,
                                   called: str | None) -> None:
    for model, translated in [("gpt-4o-mini", openai_wire), ("claude-haiku-4-5", anthropic_wire)]:
        marker, messages = ask("Please use tool find_sku for SKU 9")
        done = client.chat.completions.create(model=model, messages=messages, tools=TOOLS,
                                              tool_choice=choice, max_tokens=40)
        assert wire(standin, marker)["tool_choice"] == translated
        calls = done.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ([called] if called else []), model


def test_a_reasoning_model_bills_its_reasoning_as_output(client: openai.OpenAI, standin: Any,
                                                         sessions: Any) -> None:
    marker, messages = ask()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=messages, reasoning_effort="low", verbosity="low",
        max_completion_tokens=300)
    completion = raw.parse()
    body = wire(standin, marker)
    assert body["reasoning_effort"] == "low" and body["verbosity"] == "low"
    assert "temperature" not in body  # a reasoning model takes only its default
    u = completion.usage
    assert u is not None and u.completion_tokens_details is not None
    reasoning = u.completion_tokens_details.reasoning_tokens or 0
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert 0 < reasoning == r.reasoning < r.output == u.completion_tokens <= 300
    usage = Usage(input_uncached=r.input_uncached, cache_read=r.cache_read, output=r.output)
    assert r.cost == cost_of(usage, CAT.get("gpt-5-mini")) == Decimal(
        raw.headers["x-sluice-cost"])


def test_anthropic_thinks_for_a_budget_from_the_effort(client: openai.OpenAI, standin: Any,
                                                       sessions: Any) -> None:
    marker, messages = ask()
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-6", messages=messages, reasoning_effort="low",
        max_completion_tokens=3000, stop=["ZZZ"], safety_identifier="hash-u1")
    body = wire(standin, marker)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1500}
    assert "temperature" not in body and body["stop_sequences"] == ["ZZZ"]
    assert body["metadata"] == {"user_id": "hash-u1"}
    r = row(sessions, raw.headers["x-sluice-request-id"])
    details = raw.parse().usage.completion_tokens_details  # type: ignore[union-attr]
    assert details is not None and 0 < details.reasoning_tokens == r.reasoning < r.output


def test_json_schema_is_structured_output_on_both_providers(client: openai.OpenAI,
                                                            standin: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "title", "schema": SCHEMA,
                                                  "strict": True}}
    for model, key in [("gpt-4o-mini", "response_format"), ("claude-haiku-4-5", "output_config")]:
        marker, messages = ask()
        done = client.chat.completions.create(model=model, messages=messages, max_tokens=60,
                                              response_format=fmt)  # type: ignore[arg-type]
        assert set(json.loads(done.choices[0].message.content or "")) == {"title"}
        assert key in wire(standin, marker)


@pytest.mark.parametrize(("model", "params", "param"), [
    ("claude-haiku-4-5", {"seed": 3}, "seed"),
    ("claude-haiku-4-5", {"logit_bias": {"1": 2}}, "logit_bias"),
    ("gpt-5-mini", {"top_p": 0.5}, "top_p"),
    ("gpt-5-mini", {"temperature": 0.2}, "temperature"),
    ("gpt-4o", {"reasoning_effort": "high"}, "reasoning_effort"),
    ("gpt-4o", {"verbosity": "high"}, "verbosity"),
    ("claude-haiku-4-5", {"logprobs": True}, "logprobs"),
    ("claude-sonnet-4-6", {"reasoning_effort": "low", "tools": TOOLS,
                           "tool_choice": "required", "max_completion_tokens": 3000},
     "tool_choice"),
    ("gpt-4o", {"service_tier": "priority"}, "service_tier"),
    ("gpt-4o", {"n": 2}, "n"),
    ("gpt-4o", {"modalities": ["text", "audio"]}, "modalities"),
    ("gpt-4o", {"max_completion_tokens": 50000}, "max_completion_tokens"),
])
def test_what_the_model_cannot_honour_is_a_400_naming_it(client: openai.OpenAI, standin: Any,
                                                         model: str, params: dict[str, Any],
                                                         param: str) -> None:
    marker, messages = ask()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=messages, **params)
    body = exc.value.body
    assert isinstance(body, dict) and body.get("param") == param, body
    assert standin.received(contains=marker) == []  # refused before anything was sent


def test_drop_params_drops_and_the_answer_lists_what(client: openai.OpenAI, standin: Any,
                                                     sessions: Any) -> None:
    marker, messages = ask()
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=messages, seed=3, logit_bias={"1": 2}, top_p=0.8,
        max_tokens=30, extra_headers={"x-sluice-drop-params": "true"})
    assert raw.headers["x-sluice-dropped-params"] == "seed, logit_bias"
    body = wire(standin, marker)
    assert "seed" not in body and "logit_bias" not in body and body["top_p"] == 0.8
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert r.outcome == "ok" and "dropped seed, logit_bias" in r.route_reason


def png_url(width: int, height: int) -> tuple[str, str]:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (250, 120, 10)).save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + data, data


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_images_are_sent_counted_and_billed_and_never_kept(
        client: openai.OpenAI, standin: Any, sessions: Any, celery_worker_proc: Any,
        model: str) -> None:
    url, data = png_url(900, 600)
    marker = uuid.uuid4().hex
    content = [{"type": "text", "text": f"Describe this product ({marker})"},
               {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=30, messages=[{"role": "user", "content": content}])
    completion = raw.parse()
    r = row(sessions, raw.headers["x-sluice-request-id"])
    ours = parse_request({"team": "t", "feature": "f", "messages": [{"role": "user", "parts": [
        {"type": "text", "text": content[0]["text"]},
        {"type": "image", "url": url, "detail": "high"}]}]})
    spec = CAT.get(model)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == r.input_uncached
    # The image by the provider's own rule: exact where the provider counts text as we do
    # (o200k), bounded by the reservation's count where it does not (Claude's tokenizer).
    if spec.provider == "openai":
        assert r.input_uncached == count_request(ours, spec)
    else:
        assert 600 * 900 // 750 < r.input_uncached <= input_bound(prompt_count(ours, spec),
                                                                  spec.bound)
    assert r.cost == cost_of(Usage(input_uncached=r.input_uncached, output=r.output), spec)
    sent = json.dumps(wire(standin, marker))
    assert ("image_url" if spec.provider == "openai" else '"type": "image"') in sent
    # The bytes went to the provider and nowhere else: not the worker's log, not the ledger.
    log = celery_worker_proc.log_path.read_text(errors="replace")
    assert data[100:160] not in log
    assert all(data[100:160] not in str(v) for v in vars(r).values())


def test_an_image_on_a_tier_that_cannot_see_goes_where_it_can(client: openai.OpenAI,
                                                              sessions: Any) -> None:
    url, _ = png_url(64, 64)
    raw = client.chat.completions.with_raw_response.create(
        model="self-hosted", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "text", "text": f"What is it? ({uuid.uuid4().hex})"},
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert raw.parse().model == "gpt-4o-mini"
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert r.model == "gpt-4o-mini" and "overridden: sluice-tiny-llama cannot honour " \
        "messages" in r.route_reason
    # Named, a model that cannot see is a 400 naming the messages.
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="sluice-tiny-llama", max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    assert isinstance(exc.value.body, dict) and exc.value.body.get("param") == "messages"
