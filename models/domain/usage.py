"""Token usage normalized across providers into disjoint billing classes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Tokens by billing class. The input classes are disjoint: their sum is the whole prompt."""

    model_config = ConfigDict(frozen=True)

    input_uncached: int = Field(default=0, ge=0)
    cache_read: int = Field(default=0, ge=0)
    cache_write_5m: int = Field(default=0, ge=0)
    cache_write_1h: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0)
    #: Reasoning tokens, already counted inside ``output`` (informational only).
    reasoning: int = Field(default=0, ge=0)

    @property
    def input_total(self) -> int:
        """Every prompt token, whatever its billing class."""
        return self.input_uncached + self.cache_read + self.cache_write_5m + self.cache_write_1h

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f: getattr(self, f) + getattr(other, f) for f in type(self).model_fields})


def from_openai(usage: Any) -> Usage:
    """Normalize OpenAI chat-completions ``usage``: ``prompt_tokens`` INCLUDES ``cached_tokens``."""
    data = _as_dict(usage)
    prompt = int(data.get("prompt_tokens") or 0)
    details = _as_dict(data.get("prompt_tokens_details"))
    cached = min(int(details.get("cached_tokens") or 0), prompt)
    out_details = _as_dict(data.get("completion_tokens_details"))
    return Usage(
        input_uncached=prompt - cached,
        cache_read=cached,
        output=int(data.get("completion_tokens") or 0),
        reasoning=int(out_details.get("reasoning_tokens") or 0),
    )


def from_openai_responses(usage: Any) -> Usage:
    """Normalize an OpenAI Responses ``usage`` exactly as chat completions': ``input_tokens``
    INCLUDES ``cached_tokens``, ``output_tokens`` the reasoning tokens."""
    data = _as_dict(usage)
    return from_openai({"prompt_tokens": data.get("input_tokens"),
                        "prompt_tokens_details": data.get("input_tokens_details"),
                        "completion_tokens": data.get("output_tokens"),
                        "completion_tokens_details": data.get("output_tokens_details")})


def from_anthropic(usage: Any) -> Usage:
    """Normalize an Anthropic messages ``usage``: ``input_tokens`` EXCLUDES both cache buckets."""
    data = _as_dict(usage)
    written = int(data.get("cache_creation_input_tokens") or 0)
    split = _as_dict(data.get("cache_creation"))
    w1h = int(split.get("ephemeral_1h_input_tokens") or 0)
    w5m = int(split.get("ephemeral_5m_input_tokens") or 0)
    if w1h + w5m != written:
        # Older responses carry only the total; those writes are the default 5-minute kind.
        w5m = max(written - w1h, 0)
    return Usage(
        input_uncached=int(data.get("input_tokens") or 0),
        cache_read=int(data.get("cache_read_input_tokens") or 0),
        cache_write_5m=w5m,
        cache_write_1h=w1h,
        output=int(data.get("output_tokens") or 0),
    )


def from_gemini(usage: Any) -> Usage:
    """Normalize Gemini ``usageMetadata``: ``promptTokenCount`` INCLUDES
    ``cachedContentTokenCount`` (implicit and explicit cache hits alike), and thinking tokens
    (``thoughtsTokenCount``) are billed as output beside ``candidatesTokenCount``. Accepts the
    wire's camelCase or the SDK's snake_case."""
    data = _as_dict(usage)

    def field(snake: str) -> int:
        camel = snake.split("_")[0] + "".join(w.title() for w in snake.split("_")[1:])
        return int(data.get(snake) or data.get(camel) or 0)

    prompt = field("prompt_token_count")
    cached = min(field("cached_content_token_count"), prompt)
    thoughts = field("thoughts_token_count")
    return Usage(
        # Tokens a tool (search, code execution) put into the prompt are input too.
        input_uncached=prompt - cached + field("tool_use_prompt_token_count"),
        cache_read=cached,
        output=field("candidates_token_count") + thoughts,
        reasoning=thoughts,
    )


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump())
    return dict(vars(obj))
