"""The one small interface every provider adapter implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from models.domain.catalogue import ModelSpec
from models.domain.request import ChatRequest, ToolCall
from models.domain.thinking import ThinkingBlock
from models.domain.usage import Usage


@dataclass(frozen=True)
class ProviderCall:
    """One call to make: the request, the catalogue model it was routed to, and shaping hints."""

    request: ChatRequest
    model: ModelSpec
    #: Scope of provider-side prompt caching (team/feature), used to derive cache keys.
    cache_scope: str = ""
    #: Anthropic cache TTL for the static prefix: "5m" or "1h".
    cache_ttl: str = "5m"
    #: Seconds this attempt may take at most (what is left of the run's time limit).
    timeout_s: float | None = None
    #: Gemini: the explicit context cache holding the static part (``cachedContents/...``).
    cached_content: str = ""


def sdk_options(call: ProviderCall) -> dict[str, object]:
    """Per-call SDK options: the attempt's timeout, when the run's time limit is closer than
    the client's own."""
    return {} if call.timeout_s is None else {"timeout": max(call.timeout_s, 0.1)}


@dataclass(frozen=True)
class ProviderReply:
    """What came back, with usage already normalized into billing classes."""

    text: str
    usage: Usage
    finish_reason: str = "stop"
    #: The model name the provider reported (may carry a dated suffix).
    provider_model: str = ""
    provider_request_id: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    #: The tool calls in the answer, in order.
    tool_calls: tuple[ToolCall, ...] = ()
    #: Per-token log probabilities (OpenAI's ``logprobs.content``), when asked for.
    logprobs: tuple[dict[str, Any], ...] | None = None
    #: Reasoning items (OpenAI's Responses API), opaque, carried to the result.
    reasoning: tuple[dict[str, Any], ...] = ()
    #: Which stop sequence ended the answer (Anthropic and vLLM say; OpenAI does not).
    stop_sequence: str | None = None
    #: The model's thinking blocks, in order, as the provider returned them.
    thinking: tuple[ThinkingBlock, ...] = ()


#: Where a streaming call sends each piece of text as it arrives. A sink may also take other
#: parts (``sink.part(kind, piece)``: thinking, its signature, redacted thinking); see
#: :func:`send_part`.
TextSink = Callable[[str], None]


def send_part(sink: TextSink, kind: str, piece: str) -> None:
    """Hand a non-text part of a streamed answer to ``sink`` when it takes them (the worker's
    token stream does; a plain callable gets text only)."""
    part = getattr(sink, "part", None)
    if part is not None and piece:
        part(kind, piece)


@runtime_checkable
class Provider(Protocol):
    """Turns a :class:`ProviderCall` into a :class:`ProviderReply` or raises a ProviderError.

    Adapters make exactly one attempt: retries and fallbacks belong to
    :mod:`workers.providers.retry`, so they happen once, in one place.
    """

    name: str

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Make one attempt; raise ProviderRetryable or ProviderPermanent on failure."""
        ...

    def close(self) -> None:
        """Release clients and connections."""
        ...
