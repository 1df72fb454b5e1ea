"""OpenAI chat-completions adapter through the official ``openai`` SDK (its retries off)."""

from __future__ import annotations

from typing import Any

from models.domain.usage import from_openai
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.errors import map_sdk_error
from workers.providers.shaping import openai_chat_body


class OpenAIChatProvider:
    """One attempt per ``complete``; retries and fallbacks are ours, in workers.providers.retry."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 http_client: Any = None) -> None:
        import openai

        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                     max_retries=0, http_client=http_client)

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Call chat.completions.create once and normalize its usage."""
        kwargs = openai_chat_body(call)
        try:
            resp = self._client.chat.completions.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        choice = resp.choices[0]
        return ProviderReply(text=choice.message.content or "", usage=from_openai(resp.usage),
                             finish_reason=choice.finish_reason or "stop",
                             provider_model=resp.model, provider_request_id=resp.id)

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()
