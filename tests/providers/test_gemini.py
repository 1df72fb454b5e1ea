"""The Gemini adapter beyond the shared contract: thinking, caches, JSON, streams, Vertex, costs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of, worst_case_cost
from models.domain.tokens import PromptCount
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.tokens import count_request, count_text
from models.domain.usage import Usage, from_gemini
from workers.providers.base import ProviderCall
from workers.providers.gemini import GeminiProvider
from workers.providers.shaping import static_tokens

CAT = load_catalogue()
FLASH, PRO = CAT.get("gemini-2.5-flash"), CAT.get("gemini-2.5-pro")
SYSTEM = "You answer for the store. " + " ".join(f"Policy {i}: be exact." for i in range(400))


@pytest.fixture
def gemini(standin: Any) -> Iterator[GeminiProvider]:
    standin.reset()
    prov = GeminiProvider(api_key="gm-test", base_url=standin.gemini_base_url, timeout=5)
    yield prov
    prov.close()


def call(model: Any = FLASH, cached: str = "", **kw: Any) -> ProviderCall:
    data: dict[str, Any] = {"team": "t", "feature": "f", "max_tokens": 60,
                            "messages": [{"role": "user", "content": "What do you ship?"}]}
    data.update(kw)
    return ProviderCall(request=parse_request(data), model=model, cached_content=cached)


def test_usage_is_split_into_disjoint_classes_cached_tokens_inside_the_prompt() -> None:
    usage = from_gemini({"promptTokenCount": 5000, "cachedContentTokenCount": 4096,
                         "candidatesTokenCount": 40, "thoughtsTokenCount": 100,
                         "toolUsePromptTokenCount": 7})
    assert usage == Usage(input_uncached=904 + 7, cache_read=4096, output=140, reasoning=100)
    # The SDK's snake_case object reads the same.
    assert from_gemini({"prompt_token_count": 10, "cached_content_token_count": 4,
                        "candidates_token_count": 2}) == Usage(input_uncached=6, cache_read=4,
                                                               output=2)


def test_thinking_tokens_are_billed_as_output_within_max_tokens(gemini: GeminiProvider) -> None:
    reply = gemini.complete(call(max_tokens=40))
    assert reply.usage.reasoning > 0 and reply.usage.output > reply.usage.reasoning
    assert reply.usage.output <= 40  # thoughts share maxOutputTokens with the answer
    thought_cost = reply.usage.reasoning * FLASH.price.output / Decimal(1_000_000)
    assert cost_of(reply.usage, FLASH) >= thought_cost > 0


def test_implicit_hits_on_a_repeated_static_prefix_are_billed_at_the_cached_rate(
        gemini: GeminiProvider) -> None:
    first = gemini.complete(call(static={"system": SYSTEM}))
    again = call(static={"system": SYSTEM}, messages=[{"role": "user", "content": "Returns?"}])
    second = gemini.complete(again)
    assert first.usage.cache_read == 0
    assert second.usage.cache_read == static_tokens(again.request.static) >= 1024
    assert second.usage.input_total == count_request(again.request)
    assert cost_of(second.usage, FLASH) < cost_of(first.usage, FLASH)


def test_an_explicit_cache_is_read_whole_and_counted_inside_the_prompt(
        gemini: GeminiProvider, standin: Any) -> None:
    c = call(static={"system": SYSTEM})
    made = gemini.client.caches.create(model="gemini-2.5-flash",
                                       config={"system_instruction": SYSTEM, "ttl": "600s"})
    assert made.usage_metadata.total_token_count == static_tokens(c.request.static)
    reply = gemini.complete(call(static={"system": SYSTEM}, cached=made.name))
    assert reply.usage.cache_read == static_tokens(c.request.static)
    assert reply.usage.input_total == count_request(c.request)
    # get, patch (TTL) and delete through the SDK; a deleted cache is a permanent error.
    assert gemini.client.caches.get(name=made.name).name == made.name
    gemini.client.caches.update(name=made.name, config={"ttl": "60s"})
    gemini.client.caches.delete(name=made.name)
    assert standin.stats()["gemini_caches"]["deleted"] == 1
    with pytest.raises(ProviderPermanent) as exc:
        gemini.complete(call(static={"system": SYSTEM}, cached=made.name))
    assert exc.value.status == 403


def test_a_cache_below_the_model_minimum_is_refused(gemini: GeminiProvider) -> None:
    from google.genai import errors

    with pytest.raises(errors.ClientError, match="too small"):
        gemini.client.caches.create(model="gemini-2.5-pro",
                                    config={"system_instruction": SYSTEM[:2000], "ttl": "60s"})


def test_count_tokens_agrees_with_our_count(gemini: GeminiProvider) -> None:
    c = call(static={"system": "Be brief."})
    from workers.providers.gemini_shaping import gemini_request

    contents, cfg = gemini_request(c.request, FLASH)
    counted = gemini.client.models.count_tokens(model="gemini-2.5-flash", contents=contents)
    # countTokens of the contents alone: what generateContent bills for them (our count
    # less the system instruction, which the Gemini API's countTokens does not take).
    assert counted.total_tokens == count_request(c.request) - (4 + count_text("Be brief."))


def test_json_output(gemini: GeminiProvider) -> None:
    reply = gemini.complete(call(response_format="json"))
    assert isinstance(json.loads(reply.text), dict)


def test_a_stream_cut_mid_answer_may_have_been_billed(gemini: GeminiProvider,
                                                      standin: Any) -> None:
    standin.script_faults(["cut=2"], path="gemini")
    pieces: list[str] = []
    with pytest.raises(ProviderRetryable) as exc:
        gemini.stream(call(messages=[{"role": "user", "content": "Explain it in detail."}]),
                      pieces.append)
    assert pieces and exc.value.details["billed"] == "unknown"


def test_a_timeout_is_retryable(standin: Any) -> None:
    prov = GeminiProvider(api_key="k", base_url=standin.gemini_base_url, timeout=0.3)
    standin.script_faults(["timeout=2"], path="gemini")
    with pytest.raises(ProviderRetryable):
        prov.complete(call())
    prov.close()


def test_vertex_ai_is_a_configuration_of_the_same_adapter(standin: Any) -> None:
    # Express mode: an API key, Vertex paths (v1beta1, publisher models).
    prov = GeminiProvider(api_key="vx-key", base_url=standin.gemini_base_url, timeout=5,
                          vertex=True)
    before = standin.stats()["by_path"]
    reply = prov.complete(call())
    prov.close()
    path = "/v1beta1/publishers/google/models/gemini-2.5-flash:generateContent"
    assert reply.text and standin.stats()["by_path"].get(path, 0) == before.get(path, 0) + 1


def test_the_long_context_tier_prices_every_token_and_bounds_the_reservation() -> None:
    short = Usage(input_uncached=200_000, output=1000)
    long = Usage(input_uncached=200_001, output=1000)
    assert cost_of(short, PRO) == Decimal("0.26")  # 200k x 1.25 + 1k x 10, per 1M
    assert cost_of(long, PRO) == Decimal("0.5150025")  # every token at 2.50 / 15
    # A prompt we count below the boundary that Gemini's own tokenizer could count above it
    # is reserved at the long tier; one well below it at the short tier.
    assert worst_case_cost(PromptCount(tokens=170_000), 1000, PRO) == Decimal("0.44")
    assert worst_case_cost(PromptCount(tokens=150_000), 1000, PRO) == Decimal("0.1975")
    for n in range(150_000, 260_001, 2_500):
        worst = worst_case_cost(PromptCount(tokens=n), 1000, PRO)
        assert worst >= cost_of(Usage(input_uncached=n, output=1000), PRO)
