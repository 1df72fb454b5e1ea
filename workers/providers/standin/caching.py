"""Prompt-cache emulation: Anthropic ``cache_control`` breakpoints and OpenAI automatic prefixes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workers.providers.standin.prompt import Prompt

#: Blocks before a breakpoint Anthropic checks for an earlier cache entry.
LOOKBACK = 20
#: OpenAI caches the first ``min_cacheable_tokens`` (1,024) and then grows in 128-token steps.
OPENAI_STEP = 128


@dataclass(frozen=True)
class CacheUsage:
    """Prompt tokens by cache bucket; whatever is left of the prompt is plain input."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def written(self) -> int:
        """Tokens written to the cache, both lifetimes."""
        return self.write_5m + self.write_1h


class TTLStore:
    """Prefix keys with an expiry time; bounded, dropping the least recently stored first."""

    def __init__(self, clock: Callable[[], float], max_entries: int) -> None:
        self._clock = clock
        self._max = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def alive(self, key: str) -> bool:
        """Whether ``key`` is stored and not yet expired."""
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._expiry[key]
            return False
        return True

    def put(self, key: str, ttl_s: float) -> None:
        """Store (or refresh) ``key`` for ``ttl_s`` seconds from now."""
        self._expiry[key] = self._clock() + ttl_s
        self._expiry.move_to_end(key)
        while len(self._expiry) > self._max:
            self._expiry.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)


def anthropic_cache(prompt: Prompt, store: TTLStore, scope: str, min_tokens: int,
                    ttl_s: Mapping[str, float]) -> CacheUsage:
    """Read the longest live prefix at a breakpoint or up to :data:`LOOKBACK` blocks before
    one (as Anthropic looks back: an agent's breakpoint moves on each turn, and the previous
    turn's is found again this way), then write every eligible breakpoint after it.

    A breakpoint is eligible when its prefix holds at least ``min_tokens``; the tokens between
    the read point and each later eligible breakpoint are written at that breakpoint's ttl.
    """
    eligible = [bp for bp in prompt.breakpoints if bp.tokens >= min_tokens]
    read, start = 0, 0
    for index in range(len(eligible) - 1, -1, -1):
        bp = eligible[index]
        before = [b for b in prompt.boundaries if b[0] <= bp.tokens and b[1] != bp.digest]
        for tokens, digest in [(bp.tokens, bp.digest), *reversed(before[-LOOKBACK:])]:
            if tokens >= min_tokens and store.alive(f"{scope}|{digest}"):
                read = tokens
                start = index + 1 if digest == bp.digest else index
                store.put(f"{scope}|{digest}", ttl_s[bp.ttl])  # a hit refreshes the entry
                break
        if read:
            break
    position, written = read, {"5m": 0, "1h": 0}
    for bp in eligible[start:]:
        if bp.tokens > position:
            written[bp.ttl] += bp.tokens - position
            position = bp.tokens
        store.put(f"{scope}|{bp.digest}", ttl_s[bp.ttl])
    return CacheUsage(read=read, write_5m=written["5m"], write_1h=written["1h"])


def openai_steps(tokens: int, min_tokens: int) -> int:
    """``tokens`` rounded down to what OpenAI can cache: ``min_tokens`` then 128-token steps."""
    if tokens < min_tokens:
        return 0
    return min_tokens + (tokens - min_tokens) // OPENAI_STEP * OPENAI_STEP


def openai_cache(prompt: Prompt, store: TTLStore, scope: str, min_tokens: int,
                 ttl_s: float) -> int:
    """Cached tokens of an OpenAI prompt: its longest prefix seen before, in cacheable steps.

    Prefixes end at tool and message boundaries; every prefix long enough to cache is
    (re)stored, so a repeat within the TTL hits and refreshes it.
    """
    if prompt.total < min_tokens:
        return 0
    hit = 0
    for tokens, digest in reversed(prompt.prefixes):
        if tokens < min_tokens:
            break
        if store.alive(f"{scope}|{digest}"):
            hit = tokens
            break
    for tokens, digest in prompt.prefixes:
        if tokens >= min_tokens:
            store.put(f"{scope}|{digest}", ttl_s)
    return openai_steps(hit, min_tokens)
