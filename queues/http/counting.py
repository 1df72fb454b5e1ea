"""Counting a Messages prompt: the provider's own count for Claude, ours otherwise.

For a Claude model the door asks Anthropic's count_tokens (through the official SDK, the body
as the client sent it, the model's API name), so the answer is the count the request is
billed by. For other models, and when Anthropic cannot be asked, it is the model's tokenizer
count (o200k, with the per-provider bound where the provider counts differently). Budget
reservations do not use this answer: they stay upper bounds (models/domain/tokens.py).
"""

from __future__ import annotations

import logging
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.request import parse_request
from models.domain.settings import ProviderSettings
from models.domain.tokens import input_bound, prompt_count

log = logging.getLogger(__name__)
#: The body fields Anthropic's count_tokens takes (the rest of a count body is refused).
_COUNTED = ("system", "messages", "tools", "tool_choice", "thinking")
#: What the SDK sends as the key to a stand-in without one (it checks that there is a key).
_PLACEHOLDER_KEY = "sk-sluice-standin"


class AnthropicCounter:
    """Asks Anthropic (or the stand-in serving its API) for a prompt's token count."""

    def __init__(self, providers: ProviderSettings) -> None:
        self._settings = providers
        self._client: Any = None

    @property
    def available(self) -> bool:
        """Whether a key or a base URL is configured (else nothing can be asked)."""
        p = self._settings
        return p.anthropic_api_key is not None or bool(p.anthropic_base_url)

    def _sdk(self) -> Any:
        if self._client is None:  # built on first use, never at import or startup
            import anthropic

            p = self._settings
            key = (p.anthropic_api_key.get_secret_value() if p.anthropic_api_key is not None
                   else _PLACEHOLDER_KEY)
            # One attempt, soon abandoned: the door answers with its own count instead.
            self._client = anthropic.AsyncAnthropic(api_key=key, base_url=p.anthropic_base_url,
                                                    max_retries=0,
                                                    timeout=min(p.timeout_s, 10.0))
        return self._client

    async def count(self, model: ModelSpec, body: dict[str, Any],
                    headers: dict[str, str]) -> int | None:
        """Anthropic's count of ``body`` on ``model``, or None when it could not be had."""
        if not self.available:
            return None
        kwargs = {k: body[k] for k in _COUNTED if k in body}
        try:
            found = await self._sdk().messages.count_tokens(
                model=model.api_name or model.name, extra_headers=headers or None, **kwargs)
        except Exception as exc:  # noqa: BLE001 - our own count answers instead
            log.warning("anthropic count_tokens failed for %s, answering our count: %s",
                        model.name, exc)
            return None
        return int(found.input_tokens)

    async def close(self) -> None:
        """Release the SDK's connections."""
        if self._client is not None:
            await self._client.close()


def ours(data: dict[str, Any], spec: ModelSpec | None) -> int:
    """Our count: the model's tokenizer (o200k), with the provider's bound where it counts
    differently, so a client that budgets by it never under-counts."""
    prompt = prompt_count(parse_request(data), spec)
    return input_bound(prompt, spec.bound) if spec is not None else prompt.tokens
