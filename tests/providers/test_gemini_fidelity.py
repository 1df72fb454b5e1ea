"""Chat parameters as Gemini receives them: tool choice, JSON schema, thinking, images, sampling."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from models.domain.catalogue import load_catalogue
from models.domain.errors import UnsupportedParameter
from models.domain.params import dropped_params
from models.domain.request import parse_request
from models.domain.tokens import count_request
from workers.providers.base import ProviderCall
from workers.providers.gemini import GeminiProvider

CAT = load_catalogue()
TOOLS = [{"name": "find_sku", "description": "Look a product up by its SKU.",
          "parameters": {"type": "object", "properties": {"request": {"type": "string"}}}},
         {"name": "stock", "description": "Stock of a SKU."}]
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"},
                                           "price": {"type": "number"}},
          "required": ["title", "price"], "additionalProperties": False}


@pytest.fixture(scope="module")
def gemini(standin: Any) -> Iterator[GeminiProvider]:
    prov = GeminiProvider(api_key="gm-test", base_url=standin.gemini_base_url, timeout=10)
    yield prov
    prov.close()


def send(standin: Any, gemini: GeminiProvider, model: str = "gemini-2.5-flash",
         text: str = "Describe it", **kw: Any) -> tuple[Any, dict[str, Any], Any]:
    """The reply, the body the stand-in received, the request."""
    marker = text if "(" in text else uuid.uuid4().hex
    data: dict[str, Any] = {"team": "t", "feature": "f", "max_tokens": 200, "model": model,
                            "messages": [{"role": "user", "content": f"{text} ({marker})"}]}
    data.update(kw)
    request = parse_request(data)
    spec = CAT.get(model)
    dropped_params(request, spec)  # what the door would refuse is refused here too
    reply = gemini.complete(ProviderCall(request=request, model=spec))
    (got,) = standin.received(contains=marker)
    return reply, got["body"], request


@pytest.mark.parametrize("choice, mode, called", [
    ({"mode": "required"}, "ANY", "find_sku"), ({"mode": "function", "name": "stock"}, "ANY",
                                                 "stock"),
    ({"mode": "none"}, "NONE", None), ({"mode": "auto"}, "AUTO", None)])
def test_tool_choice_becomes_function_calling_config_and_is_obeyed(
        standin: Any, gemini: GeminiProvider, choice: dict[str, Any], mode: str,
        called: str | None) -> None:
    reply, body, _ = send(standin, gemini, static={"tools": TOOLS}, tool_choice=choice)
    calling = body["toolConfig"]["functionCallingConfig"]
    assert calling["mode"] == mode
    if choice["mode"] == "function":
        assert calling["allowedFunctionNames"] == ["stock"]
    assert [c.name for c in reply.tool_calls] == ([called] if called else [])
    assert reply.finish_reason == ("tool_calls" if called else "stop")


def test_a_json_schema_answer_follows_the_schema(standin: Any, gemini: GeminiProvider) -> None:
    reply, body, _ = send(standin, gemini, response_format="json_schema",
                          response_schema={"name": "item", "schema": SCHEMA})
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCHEMA
    answer = json.loads(reply.text)
    assert set(answer) == {"title", "price"} and isinstance(answer["price"], (int, float))


def budget_sent(body: dict[str, Any]) -> Any:
    # The SDK sends this nested key in snake_case; the API reads either spelling.
    (value,) = body["generationConfig"]["thinkingConfig"].values()
    return value


def test_reasoning_efforts_become_thinking_budgets_billed_as_output(
        standin: Any, gemini: GeminiProvider) -> None:
    off, body, _ = send(standin, gemini, reasoning_effort="none")
    assert budget_sent(body) == 0
    assert off.usage.reasoning == 0
    budget, body, _ = send(standin, gemini, thinking_budget=1024, max_tokens=2000)
    assert budget_sent(body) == 1024
    assert 0 < budget.usage.reasoning <= 1024 and budget.usage.output > budget.usage.reasoning
    # Pro always thinks: "none" is refused before anything is sent, with who accepts it.
    with pytest.raises(UnsupportedParameter, match="always reasons"):
        dropped_params(parse_request({"team": "t", "feature": "f", "reasoning_effort": "none",
                                      "messages": [{"role": "user", "content": "hi"}]}),
                       CAT.get("gemini-2.5-pro"))


def test_sampling_parameters_are_forwarded_and_the_rest_refused(
        standin: Any, gemini: GeminiProvider) -> None:
    _, body, _ = send(standin, gemini, temperature=0.7, top_p=0.9, top_k=40, seed=7,
                      presence_penalty=0.5, frequency_penalty=0.25)
    config = body["generationConfig"]
    assert (config["temperature"], config["topP"], config["topK"], config["seed"],
            config["presencePenalty"], config["frequencyPenalty"]) == (0.7, 0.9, 40, 7, 0.5,
                                                                       0.25)
    with pytest.raises(UnsupportedParameter, match="logit_bias"):
        send(standin, gemini, logit_bias={"42": 5})


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (9, 99, 199)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("size, tokens", [((300, 200), 258), ((1400, 900), 4 * 258)])
def test_images_reach_gemini_and_are_counted_as_it_bills(
        standin: Any, gemini: GeminiProvider, size: tuple[int, int], tokens: int) -> None:
    text = {"type": "text", "text": f"Write a product title ({uuid.uuid4().hex})"}
    reply, body, request = send(standin, gemini, text=text["text"], messages=[
        {"role": "user", "parts": [text, {"type": "image", "url": _png(*size)}]}])
    spec = CAT.get("gemini-2.5-flash")
    # The reservation's count is Gemini's bill: 258 a small image, 258 per 768 px crop.
    assert reply.usage.input_total == count_request(request, spec)
    alone = parse_request({"team": "t", "feature": "f", "messages": [
        {"role": "user", "parts": [text]}]})
    assert count_request(request, spec) - count_request(alone, spec) == tokens
    inline = body["contents"][0]["parts"][1]["inlineData"]
    # (The SDK sends mime_type in snake_case inside inlineData; the API reads either.)
    assert inline["mime_type"] == "image/png" and inline["data"].startswith("sha256:")
