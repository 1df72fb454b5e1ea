"""Find volatile content (timestamps, ids, dates) in a static part: it defeats caching."""

from __future__ import annotations

import functools
from collections import Counter

from models.domain.normalize import (BUILTIN_PATTERNS, NormalizationReport, NormalizationSpec,
                                     Normalizer)
from models.domain.request import StaticPart


@functools.cache
def _detector() -> Normalizer:
    # Every built-in volatile pattern; long static texts are memoized by the normalizer, so a
    # system prompt repeated on every request costs one dict lookup after the first time.
    return Normalizer(NormalizationSpec(patterns=tuple(BUILTIN_PATTERNS)))


def volatile_in_static(static: StaticPart) -> Counter[str]:
    """Pattern name → hits in the static part (system, few-shot, tool descriptions).

    A timestamp or request id in the prefix changes its bytes on every request, so providers
    never find it in their prompt cache (and Anthropic bills the 1.25x write each time).
    """
    report = NormalizationReport()
    detect = _detector()
    texts = [static.system, *(m.content for m in static.few_shot),
             *(t.description for t in static.tools)]
    for text in texts:
        if text:
            detect(text, report)
    return report.fired
