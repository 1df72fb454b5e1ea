"""Gemini models behind the chat-completions door, named or through a routing tier."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.frontdoor_support import SYSTEM, row, serve_frontdoor, user

pytestmark = pytest.mark.integration
LONG = "Store style guide. " + " ".join(f"Rule {i}: keep titles plain." for i in range(300))


def test_a_gemini_model_answers_through_the_door_and_is_billed_by_class(
        client: openai.OpenAI, sessions: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", max_tokens=40,
        messages=[{"role": "system", "content": SYSTEM}, user("Rephrase: blue ceramic mug")],
        extra_headers={"x-sluice-feature": "gemini-titles"})
    completion = raw.parse()
    assert completion.model == "gemini-2.5-flash" and completion.choices[0].message.content
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert (r.provider, r.model, r.outcome) == ("google", "gemini-2.5-flash", "ok")
    u = completion.usage
    assert u is not None and u.prompt_tokens == r.input_uncached + r.cache_read
    # Thinking tokens are output: counted in completion_tokens and billed at the output price.
    assert r.reasoning > 0 and u.completion_tokens == r.output > r.reasoning


def test_gemini_implicit_cache_hits_show_as_cached_prompt_tokens(client: openai.OpenAI,
                                                                 sessions: Any) -> None:
    client.chat.completions.create(model="gemini-2.5-flash", max_tokens=16, messages=[
        {"role": "system", "content": LONG}, user("Rephrase: oak table")])
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", max_tokens=16,
        messages=[{"role": "system", "content": LONG}, user("Rephrase: pine chair")])
    second = raw.parse()
    details = second.usage.prompt_tokens_details if second.usage else None
    assert details is not None and details.cached_tokens and details.cached_tokens >= 1024
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert r.cache_read == details.cached_tokens and r.cost < r.list_cost


def test_a_gemini_answer_streams_through_the_door(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gemini-2.5-flash", max_tokens=60, stream=True,
        stream_options={"include_usage": True},
        messages=[user("Explain tea brewing in detail, step by step.")]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_routing_tier_can_name_a_gemini_model(integration_settings: Any, gateway: Any,
                                                team_key: str, sessions: Any) -> None:
    routing = integration_settings.routing.model_copy(
        update={"cheap_model": "gemini-2.5-flash", "flagship_model": "gemini-2.5-pro"})
    settings = integration_settings.model_copy(update={"routing": routing})
    with serve_frontdoor(settings) as url:
        c = openai.OpenAI(api_key=team_key, base_url=url + "/v1", max_retries=0, timeout=30)
        raw = c.chat.completions.with_raw_response.create(
            model="flagship", max_tokens=30, messages=[user("Rephrase: linen towel")])
        c.close()
    assert raw.parse().model == "gemini-2.5-pro"
    assert raw.headers["x-sluice-route"].startswith("tier=flagship; model=gemini-2.5-pro")
    assert row(sessions, raw.headers["x-sluice-request-id"]).provider == "google"
