"""Advisor levers that read the prompt text a feature keeps: near-repeats that only a volatile
field kept out of the response cache, and static prefixes too short for provider caching."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.db.stored_text import StoredTextRow
from models.db.tables import LedgerRow
from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.cost import cost_of
from models.domain.normalize import (BUILTIN_PATTERNS, NormalizationReport, NormalizationSpec,
                                     Normalizer)
from models.domain.tokens import count_text
from models.domain.usage import Usage

#: Providers whose prompt cache the project uses on a static prefix (OpenAI automatically,
#: Anthropic through the ``cache_control`` the adapter sets on the static part).
CACHING_PROVIDERS = ("openai", "anthropic")
#: Padding aims this far above the minimum: our count of a prefix and the provider's differ by
#: the chat framing, and a prefix one token short caches nothing.
PAD_MARGIN = 64
#: OpenAI caches the minimum and then 128-token steps.
OPENAI_STEP = 128
#: A prefix not read again within this long is written again (Anthropic's 5-minute cache).
CACHE_TTL = timedelta(minutes=5)
ROLES = ("\nuser: ", "\nassistant: ", "\ntool: ")


@functools.cache
def _detector() -> Normalizer:
    return Normalizer(NormalizationSpec(patterns=tuple(BUILTIN_PATTERNS)))


def text_rows(session: Session, since: datetime, feature: str | None,
              org: str) -> list[tuple[LedgerRow, str]]:
    """Served chat rows of ``org``'s window whose feature kept their text, oldest first."""
    stmt = (select(LedgerRow, StoredTextRow.prompt)
            .join(StoredTextRow, (StoredTextRow.org == LedgerRow.org)
                  & (StoredTextRow.team == LedgerRow.team)
                  & (StoredTextRow.request_id == LedgerRow.request_id))
            .where(LedgerRow.created_at >= since, LedgerRow.outcome == "ok",
                   LedgerRow.purpose == "serve", LedgerRow.kind == "chat",
                   LedgerRow.org == org)
            .order_by(LedgerRow.id))
    if feature is not None:
        stmt = stmt.where(LedgerRow.feature == feature)
    return [(row, prompt) for row, prompt in session.execute(stmt)]


def volatile_repeats(pairs: list[tuple[LedgerRow, str]]) -> list[Any]:
    """Prompts that differ from one answered before (same feature and model) only by volatile
    fields (timestamps, ids, dates, order numbers): the rule that would make them one key."""
    from ops.advise import Advice

    seen: dict[tuple[str, str, str], list[str]] = {}
    saved: dict[str, Decimal] = defaultdict(Decimal)
    count: dict[str, int] = defaultdict(int)
    fired: dict[str, set[str]] = defaultdict(set)
    for row, prompt in pairs:
        key = (row.feature, row.model, _detector()(prompt, NormalizationReport()))
        raw = seen.setdefault(key, [])
        # An exact repeat is the response-cache line's; only a repeat that needs the rule here.
        if raw and prompt not in raw and not row.cache_hit:
            saved[row.feature] += row.cost
            count[row.feature] += 1
            fired[row.feature] |= _differing(raw[0], prompt)
        raw.append(prompt)
    out = []
    for f, v in saved.items():
        names = [n for n in BUILTIN_PATTERNS if n in fired[f]]
        rule = '{"%s": {"patterns": [%s]}}' % (f, ", ".join(f'"{n}"' for n in names))
        out.append(Advice(f, "normalize", f"normalize {', '.join(names)} in its cache key: "
                          f"{count[f]} prompts differed from an earlier one only there "
                          f"(SLUICE_CACHE__FEATURES='{rule}')",
                          "each such prompt is a $0 response-cache hit (same model and "
                          "parameters; read from the text the feature keeps)", v, Decimal(0)))
    return out


def _differing(first: str, other: str) -> set[str]:
    """The built-in patterns whose matches differ between two prompts: the rule needs only
    those (a date both prompts share is no reason to strip dates)."""
    out = set()
    for name, (regex, flags) in BUILTIN_PATTERNS.items():
        pattern = _compiled(regex, flags)
        if pattern.findall(first) != pattern.findall(other):
            out.add(name)
    return out


@functools.cache
def _compiled(regex: str, flags: int) -> re.Pattern[str]:
    return re.compile(regex, flags)


def static_prefix(prompts: list[str]) -> str:
    """The part every prompt shares, cut back to a turn boundary (what a provider caches)."""
    common = prompts[0]
    for p in prompts[1:]:
        n = 0
        for a, b in zip(common, p):
            if a != b:
                break
            n += 1
        common = common[:n]
    cut = min((i for i in (common.find(r) for r in ROLES) if i >= 0), default=-1)
    if cut < 0:
        return ""
    head = common[:cut]
    return head[len("system: "):] if head.startswith("system: ") else head


def short_prefixes(pairs: list[tuple[LedgerRow, str]], catalogue: Catalogue) -> list[Any]:
    """A static prefix shared by a feature's prompts but shorter than the model's minimum
    cacheable length: nothing caches; padded to the minimum, every later request reads it."""
    from ops.advise import Advice

    groups: dict[tuple[str, str], list[tuple[LedgerRow, str]]] = defaultdict(list)
    for row, prompt in pairs:
        groups[(row.feature, row.model)].append((row, prompt))
    out = []
    for (feature, model), group in groups.items():
        spec = catalogue.models.get(model)
        if spec is None or spec.provider not in CACHING_PROVIDERS or len(group) < 2:
            continue
        if any(r.cache_read or r.cache_write_5m or r.cache_write_1h for r, _ in group):
            continue  # something caches already
        tokens = count_text(static_prefix([p for _, p in group]))
        need = spec.min_cacheable_tokens
        if not tokens or tokens >= need:
            continue
        padded = need + PAD_MARGIN
        paid = sum((r.cost for r, _ in group), Decimal(0))
        after = padded_cost([r for r, _ in group], spec, tokens, padded)
        if after < paid:
            out.append(Advice(feature, "pad-prefix", f"grow the static prefix of {model} "
                              f"from ~{tokens} to ~{padded} tokens (minimum {need}): move the "
                              "stable instructions, examples or tool definitions ahead of the "
                              f"varying text, or pad with reference text, for {len(group)} "
                              "requests", f"below {need} tokens {spec.provider} caches nothing; "
                              "padded, each request but the first within 5 minutes reads it "
                              "at the cache-read price (the padding itself billed)",
                              paid - after, Decimal(0)))
    return out


def padded_cost(rows: list[LedgerRow], spec: ModelSpec, tokens: int, padded: int) -> Decimal:
    """What ``rows`` would cost with a ``tokens``-token static prefix grown to ``padded``."""
    total, last = Decimal(0), None
    for r in rows:
        warm = last is not None and r.created_at - last <= CACHE_TTL
        last = r.created_at
        rest = r.input_uncached - tokens
        if spec.provider == "openai":
            cached = (spec.min_cacheable_tokens + (padded - spec.min_cacheable_tokens)
                      // OPENAI_STEP * OPENAI_STEP) if warm else 0
            usage = Usage(input_uncached=rest + padded - cached, cache_read=cached,
                          output=r.output)
        else:
            usage = Usage(input_uncached=rest, cache_read=padded if warm else 0,
                          cache_write_5m=0 if warm else padded, output=r.output)
        total += cost_of(usage, spec, batch=r.batch)
    return total
