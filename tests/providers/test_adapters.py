"""One contract suite over every provider adapter, through the official SDKs, on the stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.tokens import count_request, input_bound, prompt_count
from workers.providers.anthropic_messages import AnthropicMessagesProvider
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.gemini import GeminiProvider
from workers.providers.openai_chat import OpenAIChatProvider
from workers.providers.retry import RetryPolicy, with_retries

CAT = load_catalogue()
#: Every adapter and transport: Anthropic's API, Bedrock and Vertex through the anthropic SDK's
#: own clients; OpenAI, Azure OpenAI and an OpenAI-compatible server through the openai SDK's.
TRANSPORTS = ["openai", "anthropic", "google", "bedrock", "vertex", "azure", "openai_compatible"]
#: The wire format (and so the behaviour) each transport has.
FAMILY = {"bedrock": "anthropic", "vertex": "anthropic", "azure": "openai",
          "openai_compatible": "openai"}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-6",
          "google": "gemini-2.5-flash"}
#: The stand-in's fault scripts are keyed by wire format, or by the platform's paths.
WIRE = {"openai": "openai", "anthropic": "anthropic", "google": "gemini", "bedrock": "bedrock",
        "vertex": "vertex", "azure": "azure", "openai_compatible": "openai"}
#: The model as each platform names it (a Bedrock model id with its ``:0``, a Vertex ``@date``,
#: an Azure deployment name).
API_NAMES = {"bedrock": "anthropic.claude-sonnet-4-5-20250929-v1:0",
             "vertex": "claude-sonnet-4-5@20250929", "azure": "gpt-4o-mini",
             "openai_compatible": "gpt-4o-mini"}
LONG_SYSTEM = "You are a careful assistant. " + " ".join(f"Rule {i}: be concise."
                                                        for i in range(400))


def family(name: str) -> str:
    return FAMILY.get(name, name)


def spec_for(name: str) -> Any:
    if name in API_NAMES:
        base = CAT.get("claude-sonnet-4-5" if family(name) == "anthropic" else MODELS["openai"])
        return replace(base, api_name=API_NAMES[name])
    return CAT.get(MODELS[name])


def make_adapter(name: str, standin: Any, monkeypatch: Any, timeout: float = 5) -> Any:
    if name == "openai":
        return OpenAIChatProvider(api_key="sk-test", base_url=standin.openai_base_url,
                                  timeout=timeout)
    if name == "google":
        return GeminiProvider(api_key="gm-test", base_url=standin.gemini_base_url,
                              timeout=timeout)
    if name == "bedrock":
        # Fake AWS credentials: the SDK signs with SigV4, the stand-in accepts the signature.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTANDIN")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "standin-secret")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        return AnthropicMessagesProvider(transport="bedrock", region="us-east-1",
                                         base_url=standin.url, timeout=timeout)
    if name == "vertex":
        return AnthropicMessagesProvider(transport="vertex", region="europe-west1",
                                         project="sluice-test", access_token="ya29.standin",
                                         base_url=f"{standin.url}/v1", timeout=timeout)
    if name == "azure":
        return OpenAIChatProvider(api_key="az-test", base_url=standin.url,
                                  api_version="2024-10-21", timeout=timeout)
    if name == "openai_compatible":
        return OpenAIChatProvider(api_key="EMPTY", base_url=standin.openai_base_url,
                                  timeout=timeout)
    return AnthropicMessagesProvider(api_key="sk-ant-test", base_url=standin.anthropic_base_url,
                                     timeout=timeout)


@pytest.fixture(params=TRANSPORTS)
def adapter(request: Any, standin: Any, monkeypatch: Any) -> Iterator[tuple[str, Any]]:
    name = request.param
    prov = make_adapter(name, standin, monkeypatch)
    standin.reset()
    yield name, prov
    prov.close()


def call(name: str, **kw: Any) -> ProviderCall:
    data: dict[str, Any] = {"team": "t", "feature": "f", "max_tokens": 50,
                            "messages": [{"role": "user", "content": "Rephrase: red shoes"}]}
    data.update(kw)
    return ProviderCall(request=parse_request(data), model=spec_for(name),
                        cache_scope="org/t/f")


def test_reply_has_text_and_normalized_usage(adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    c = call(name, static={"system": "Be brief."})
    reply = prov.complete(c)
    assert isinstance(reply, ProviderReply) and reply.text
    assert reply.usage.output > 0 and reply.usage.output <= 50
    # The gateway's estimate and the provider's count agree: budgets reserve the right amount.
    assert reply.usage.input_total == count_request(c.request)
    assert reply.finish_reason in ("stop", "length")


def test_replies_are_deterministic(adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    assert prov.complete(call(name)).text == prov.complete(call(name)).text


def test_max_tokens_cuts_the_reply(adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    reply = prov.complete(call(name, max_tokens=3, messages=[
        {"role": "user", "content": "Write a long article and explain in detail."}]))
    assert reply.usage.output <= 3 and reply.finish_reason == "length"


def test_a_tool_call_comes_back_in_one_shape_from_both_providers(
        adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    tools = [{"name": "find_sku", "description": "Look a product up by its SKU.",
              "parameters": {"type": "object", "properties": {"request": {"type": "string"}}}}]
    reply = prov.complete(call(name, static={"tools": tools}, messages=[
        {"role": "user", "content": "Please use tool find_sku for SKU 42"}]))
    assert reply.finish_reason == "tool_calls" and reply.text == ""
    (tool,) = reply.tool_calls
    assert tool.name == "find_sku" and tool.id
    assert json.loads(tool.arguments) == {"request": "Please use tool find_sku for SKU 42"}
    assert reply.usage.output > 0
    # Without the ask, the same tools give a text answer and no call.
    plain = prov.complete(call(name, static={"tools": tools}))
    assert plain.text and plain.tool_calls == ()


def test_a_tool_loop_continues_with_the_result_and_counts_exactly(
        adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    tools = [{"name": "find_sku", "description": "Look a product up by its SKU."}]
    ask = {"role": "user", "content": "Please use tool find_sku for SKU 42"}
    first = prov.complete(call(name, static={"tools": tools}, messages=[ask]))
    (tool,) = first.tool_calls
    history = [ask, {"role": "assistant", "content": "",
                     "tool_calls": [tool.model_dump()]},
               {"role": "tool", "tool_call_id": tool.id, "content": '{"price": "12.50"}'}]
    second = call(name, static={"tools": tools}, messages=history)
    reply = prov.complete(second)
    # The model goes on from the result in text; both providers took the history as sent.
    assert reply.text and reply.tool_calls == () and reply.finish_reason in ("stop", "length")
    if family(name) in ("openai", "google"):  # counted as the gateway counts
        assert reply.usage.input_total == count_request(second.request)
    else:  # Claude-shaped: more, and still under the gateway's bound for it
        bound = input_bound(prompt_count(second.request), second.model.bound)
        assert count_request(second.request) < reply.usage.input_total <= bound


def test_a_streamed_call_hands_over_its_text_as_it_comes_and_replies_as_complete_does(
        adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    ask = call(name, max_tokens=60, messages=[
        {"role": "user", "content": "Explain tea brewing in detail, step by step."}])
    pieces: list[str] = []
    streamed = prov.stream(ask, pieces.append)
    whole = prov.complete(ask)
    assert len(pieces) > 3 and "".join(pieces) == streamed.text == whole.text
    assert streamed.usage == whole.usage and streamed.finish_reason == whole.finish_reason
    # A tool call streams too (no text pieces, the call whole at the end).
    tools = [{"name": "find_sku", "description": "Look a product up by its SKU."}]
    ask_tool = call(name, static={"tools": tools}, messages=[
        {"role": "user", "content": "Please use tool find_sku for SKU 42"}])
    pieces.clear()
    called = prov.stream(ask_tool, pieces.append)
    assert [c.name for c in called.tool_calls] == ["find_sku"] and pieces == []
    assert json.loads(called.tool_calls[0].arguments) == json.loads(
        prov.complete(ask_tool).tool_calls[0].arguments)


def test_static_prefix_is_cached_on_repeat(adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    first = prov.complete(call(name, static={"system": LONG_SYSTEM}))
    second = prov.complete(call(name, static={"system": LONG_SYSTEM}, messages=[
        {"role": "user", "content": "Another question entirely"}]))
    assert first.usage.cache_read == 0
    assert second.usage.cache_read >= 1024
    if family(name) == "anthropic":
        assert first.usage.cache_write_5m > 0  # the breakpoint wrote the prefix
    assert second.usage.input_total == count_request(call(name, static={"system": LONG_SYSTEM},
        messages=[{"role": "user", "content": "Another question entirely"}]).request)


@pytest.mark.parametrize("fault, retry_after", [("429;retry-after=2", 2.0), ("500", None),
                                                ("503", None)])
def test_transient_faults_are_retryable(adapter: tuple[str, Any], standin: Any, fault: str,
                                        retry_after: float | None) -> None:
    name, prov = adapter
    standin.script_faults([fault], path=WIRE[name])
    with pytest.raises(ProviderRetryable) as exc:
        prov.complete(call(name))
    assert exc.value.provider == (name if name in MODELS else family(name))
    assert exc.value.status == int(fault[:3])
    if retry_after is not None:
        assert exc.value.retry_after == retry_after


def test_overloaded_529_is_retryable(standin: Any) -> None:
    prov = AnthropicMessagesProvider(api_key="k", base_url=standin.anthropic_base_url, timeout=5)
    standin.script_faults(["529"], path="anthropic")
    with pytest.raises(ProviderRetryable) as exc:
        prov.complete(call("anthropic"))
    assert exc.value.status == 529


def test_malformed_json_is_retryable(adapter: tuple[str, Any], standin: Any) -> None:
    name, prov = adapter
    standin.script_faults(["malformed"], path=WIRE[name])
    with pytest.raises(ProviderRetryable):
        prov.complete(call(name))


def test_valid_json_without_the_answer_is_retryable(standin: Any) -> None:
    """The OpenAI adapter reads the raw body itself: a body lacking choices is the provider's
    fault (retried), not a crash."""
    prov = OpenAIChatProvider(api_key="k", base_url=standin.openai_base_url)
    standin.script_faults(["incomplete"], path="openai")
    with pytest.raises(ProviderRetryable, match="lacked"):
        prov.complete(call("openai"))
    assert prov.complete(call("openai")).text  # the next answer is whole again


def test_timeout_is_retryable(standin: Any) -> None:
    prov = OpenAIChatProvider(api_key="k", base_url=standin.openai_base_url, timeout=0.3)
    standin.script_faults(["timeout=2"], path="openai")
    with pytest.raises(ProviderRetryable, match="in time"):
        prov.complete(call("openai"))


def test_unknown_model_is_permanent(adapter: tuple[str, Any]) -> None:
    name, prov = adapter
    c = call(name)
    bogus = c.model.__class__(**{**c.model.__dict__, "name": "nope", "api_name": "nope"})
    with pytest.raises(ProviderPermanent) as exc:
        prov.complete(ProviderCall(request=c.request, model=bogus))
    assert exc.value.status == 404


def test_bad_request_is_permanent(adapter: tuple[str, Any], standin: Any) -> None:
    name, prov = adapter
    standin.script_faults(["400"], path=WIRE[name])
    with pytest.raises(ProviderPermanent):
        prov.complete(call(name))


def test_our_retry_policy_recovers_after_faults(adapter: tuple[str, Any], standin: Any) -> None:
    name, prov = adapter
    standin.script_faults(["429;retry-after=0", "500"], path=WIRE[name])
    waits: list[float] = []
    reply = with_retries(lambda: prov.complete(call(name)), RetryPolicy(max_attempts=3),
                         sleep=waits.append, rand=lambda: 0.5)
    assert reply.text and len(waits) == 2
    assert waits[0] == 0.0  # retry-after honoured exactly
    stats = standin.stats()
    assert sum(stats["paths"].values()) >= 3 if "paths" in stats else True
