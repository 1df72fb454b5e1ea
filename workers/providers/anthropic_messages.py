"""Anthropic messages adapter through the official ``anthropic`` SDK (its retries off)."""

from __future__ import annotations

from typing import Any

from models.domain.usage import from_anthropic
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.errors import map_sdk_error
from workers.providers.shaping import anthropic_message_params
from workers.providers.tool_calls import anthropic_tool_calls

_FINISH = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop",
           "tool_use": "tool_calls"}


class AnthropicMessagesProvider:
    """One attempt per ``complete``; the static prefix carries a cache_control breakpoint."""

    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 http_client: Any = None) -> None:
        import anthropic

        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                           max_retries=0, http_client=http_client)

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Call messages.create once and normalize its usage (input_tokens excludes cache)."""
        kwargs = anthropic_message_params(call)
        # SDK 2.x dropped the typed `temperature` argument; the API still takes it.
        kwargs["extra_body"] = {"temperature": kwargs.pop("temperature")}
        try:
            resp = self._client.messages.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        text = "".join(getattr(b, "text", "") for b in resp.content)
        return ProviderReply(text=text, usage=from_anthropic(resp.usage),
                             tool_calls=anthropic_tool_calls(resp.content),
                             finish_reason=_FINISH.get(resp.stop_reason or "", "stop"),
                             provider_model=resp.model, provider_request_id=resp.id)

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()
