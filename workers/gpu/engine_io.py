"""What goes into the vLLM engine and what comes out, as plain dataclasses (no vLLM import)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: vLLM's priority scheduler serves the LOWEST value first.
INTERACTIVE_PRIORITY = 0
ASYNC_PRIORITY = 10


@dataclass(frozen=True)
class EngineRequest:
    """One generation: a completion ``prompt`` (text or token ids) or chat ``messages``."""

    prompt: str | tuple[int, ...] | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    priority: int = INTERACTIVE_PRIORITY
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Keep generating past EOS (benchmarks want fixed-length outputs; callers never do).
    ignore_eos: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


def make_request(prompt: str | Sequence[int] | None = None, *,
                 messages: Sequence[Mapping[str, str]] | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, stop: Sequence[str] = (),
                 priority: int = INTERACTIVE_PRIORITY, request_id: str | None = None,
                 ignore_eos: bool = False, seed: int | None = None) -> EngineRequest:
    """Build an :class:`EngineRequest`, freezing the sequences so it can cross threads safely."""
    frozen_prompt: str | tuple[int, ...] | None
    frozen_prompt = prompt if prompt is None or isinstance(prompt, str) else tuple(prompt)
    return EngineRequest(
        prompt=frozen_prompt,
        messages=None if messages is None else tuple(dict(m) for m in messages),
        max_tokens=max_tokens, temperature=temperature, stop=tuple(stop), priority=priority,
        request_id=request_id or uuid.uuid4().hex, ignore_eos=ignore_eos, seed=seed)


@dataclass(frozen=True)
class EngineOutput:
    """A finished generation with the token counts the ledger bills."""

    request_id: str
    text: str
    #: Every prompt token, the cached ones included.
    prompt_tokens: int
    #: Prompt tokens served from vLLM's prefix cache (``RequestOutput.num_cached_tokens``).
    cached_tokens: int
    output_tokens: int
    finish_reason: str
    #: Prompt tokens this request newly wrote to the prefix cache (informational).
    cache_creation_tokens: int = 0
    priority: int = INTERACTIVE_PRIORITY
    #: Seconds from entering the engine host to the final output.
    latency_s: float = 0.0
    #: The stop string that ended the generation (vLLM's ``stop_reason``), when one did.
    stop_sequence: str | None = None
