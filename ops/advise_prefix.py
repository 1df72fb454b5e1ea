"""The stable-prefix lever: requests whose static part carried volatile content (timestamps,
ids), priced as if that content sat in the messages and the prefix read from the provider's
prompt cache."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from models.db.tables import LedgerRow
from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.cost import cost_of
from models.domain.normalize import BUILTIN_PATTERNS
from models.domain.tokens import PER_MESSAGE, count_text
from models.domain.usage import Usage
from ops.advise_text import ROLES, CACHE_TTL, CACHING_PROVIDERS, OPENAI_STEP


@dataclass
class _Tally:
    saved: Decimal = Decimal(0)
    requests: int = 0
    #: OpenAI requests priced without their text: the whole prompt taken as the prefix.
    bounded: int = 0


def stable_prefixes(rows: list[LedgerRow], texts: list[tuple[LedgerRow, str]],
                    catalogue: Catalogue) -> list[Any]:
    """Per feature, what its volatile-prefix requests would have cost with a stable prefix:
    each one within the cache lifetime of the feature's previous request reads the prefix
    (the first of a run still pays for it, as now)."""
    from ops.advise import Advice

    prompts = {r.request_id: p for r, p in texts}
    groups: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    for r in rows:
        if r.volatile_prefix:
            groups[(r.feature, r.model)].append(r)
    tally: dict[str, _Tally] = defaultdict(_Tally)
    for (feature, model), group in groups.items():
        spec = catalogue.models.get(model)
        if spec is None or spec.provider not in CACHING_PROVIDERS:
            continue
        t, last = tally[feature], None
        for r in sorted(group, key=lambda r: (r.created_at, r.id or 0)):
            t.requests += 1
            warm = last is not None and r.created_at - last <= CACHE_TTL
            last = r.created_at
            if warm:
                usage, bounded = _stable_usage(r, prompts.get(r.request_id), spec)
                t.bounded += bounded
                t.saved += max(Decimal(0), r.cost - cost_of(usage, spec, batch=r.batch))
    return [Advice(f, "stable-prefix", f"move the volatile content (timestamps, ids) of "
                   f"{t.requests} requests' static part into the messages", _assumption(t),
                   t.saved, Decimal(0)) for f, t in tally.items()]


def _assumption(t: _Tally) -> str:
    said = ("each request within 5 minutes of the previous one reads the static prefix from "
            "the provider's prompt cache at the cache-read price (Anthropic: the tokens it "
            "wrote each time; OpenAI: the system prompt, less the volatile content, in its "
            "cacheable steps)")
    if t.bounded:
        said += (f"; upper bound for {t.bounded} OpenAI requests whose text is not kept: their "
                 "whole prompt counted as prefix (keep the feature's text for an estimate)")
    return said


def _stable_usage(r: LedgerRow, prompt: str | None, spec: ModelSpec) -> tuple[Usage, bool]:
    """The row's usage with its prefix read from the cache; True when the prefix size is an
    upper bound (an OpenAI prompt whose text is not kept)."""
    if spec.provider == "anthropic":
        # A changing prefix is written again on every request: the written tokens are it.
        written = r.cache_write_5m + r.cache_write_1h
        return Usage(input_uncached=r.input_uncached, cache_read=r.cache_read + written,
                     output=r.output), False
    total = r.input_uncached + r.cache_read
    bounded = prompt is None
    prefix = total if bounded else PER_MESSAGE + count_text(_stable_system(prompt or ""))
    read = max(r.cache_read, _openai_steps(min(prefix, total), spec.min_cacheable_tokens))
    return Usage(input_uncached=total - read, cache_read=read, cache_write_5m=r.cache_write_5m,
                 cache_write_1h=r.cache_write_1h, output=r.output), bounded


def _stable_system(prompt: str) -> str:
    """The system prompt of a stored prompt text with its volatile matches taken out."""
    if not prompt.startswith("system: "):
        return ""
    cut = min((i for i in (prompt.find(role) for role in ROLES) if i >= 0), default=len(prompt))
    system = prompt[len("system: "):cut]
    for regex, flags in BUILTIN_PATTERNS.values():
        system = _compiled(regex, flags).sub("", system)
    return system


def _openai_steps(tokens: int, minimum: int) -> int:
    """What OpenAI caches of a ``tokens`` prefix: the minimum, then whole 128-token steps."""
    if tokens < minimum:
        return 0
    return minimum + (tokens - minimum) // OPENAI_STEP * OPENAI_STEP


@functools.cache
def _compiled(regex: str, flags: int) -> re.Pattern[str]:
    return re.compile(regex, flags)
