"""count_tokens for Claude: Anthropic's own count when it can be asked, else ours."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from models.domain.catalogue import load_catalogue
from models.domain.settings import ProviderSettings
from queues.http.counting import AnthropicCounter, ours

CAT = load_catalogue()
BODY = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}


def test_without_anthropic_configured_nothing_is_asked() -> None:
    counter = AnthropicCounter(ProviderSettings())
    assert not counter.available
    assert asyncio.run(counter.count(CAT.get("claude-haiku-4-5"), BODY, {})) is None


def test_an_unreachable_provider_leaves_the_answer_to_our_count() -> None:
    counter = AnthropicCounter(ProviderSettings(anthropic_api_key=SecretStr("k"),
                                                anthropic_base_url="http://127.0.0.1:9"))

    async def ask() -> int | None:
        try:
            return await counter.count(CAT.get("claude-haiku-4-5"), BODY, {})
        finally:
            await counter.close()

    assert asyncio.run(ask()) is None
    spec = CAT.get("claude-haiku-4-5")
    data = {"team": "t", "feature": "f", "model": spec.name, "messages": BODY["messages"]}
    # Ours is the reservation's bound of Claude's count: never below our o200k count.
    assert ours(data, spec) >= ours(data, None) > 0
