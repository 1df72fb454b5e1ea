"""Settings of the local provider stand-in, and a hand-driven clock for TTL tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models.domain.catalogue import Catalogue, load_catalogue


@dataclass
class StandInConfig:
    """How the stand-in behaves: latency, prompt-cache lifetimes, the models it serves."""

    #: Fixed delay added to every model call, in milliseconds.
    latency_ms: float = 0.0
    #: Extra delay per output token, in milliseconds (a crude decode-speed model).
    per_token_latency_ms: float = 0.0
    #: Lifetime of an Anthropic ``cache_control`` entry with ttl "5m" (the default) and "1h".
    anthropic_ttl_5m_s: float = 300.0
    anthropic_ttl_1h_s: float = 3600.0
    #: Lifetime of an OpenAI automatic prefix-cache entry.
    openai_cache_ttl_s: float = 600.0
    #: Lifetime of a Gemini implicit-cache entry (not published; hits are not guaranteed).
    gemini_implicit_ttl_s: float = 300.0
    #: Models served; each one's ``min_cacheable_tokens`` drives the prompt-cache emulation.
    catalogue: Catalogue = field(default_factory=load_catalogue)
    #: Seconds, monotonic; inject a :class:`ManualClock` to test expiry without sleeping.
    clock: Callable[[], float] = time.monotonic
    #: Seconds a batch takes to finish when the request sends no ``x-standin-batch-delay-s``
    #: (provider SDK clients in a real worker send no such header).
    batch_delay_s: float = 0.0
    #: Seconds a Gemini ``cachedContents`` creation takes to answer after the cache exists
    #: (and is billed): a test kills the worker in between.
    gemini_cache_create_delay_s: float = 0.0
    #: Seconds an OpenAI ``POST /v1/batches`` takes to answer after the batch exists (and
    #: will bill): a test kills the worker in between.
    batch_create_delay_s: float = 0.0
    #: Bound on remembered cache prefixes, so long benchmarks cannot grow memory without end.
    max_cache_entries: int = 200_000


class ManualClock:
    """A clock that only moves when told to; pass it as ``StandInConfig.clock``."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds
