"""Judges of a (served, shadow) answer pair: exact label, JSON fields, similarity, LLM rubric."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The LLM judge's fixed rubric; ``{first}`` and ``{second}`` are the two answers, asked in
#: both orders so a judge that favours a position cannot tip the verdict.
RUBRIC = (
    "You compare two answers to the same request. Reply with exactly one word: SAME if they "
    "give the user the same information (wording may differ), DIFFERENT otherwise.\n\n"
    "Request:\n{prompt}\n\nAnswer 1:\n{first}\n\nAnswer 2:\n{second}\n\nVerdict:")
_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Verdict:
    """A judge's finding on one pair: whether the answers agree, with a score in [0, 1]."""

    agree: bool
    score: float
    detail: str = ""


def normalize_label(text: str) -> str:
    """A classification answer as compared: NFKC, case-folded, punctuation and runs of space
    dropped (``" Positive."`` and ``"positive"`` are one label)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def exact(served: str, shadow: str) -> Verdict:
    """Agree when both answers are the same label after :func:`normalize_label`."""
    a, b = normalize_label(served), normalize_label(shadow)
    return Verdict(a == b, 1.0 if a == b else 0.0, "" if a == b else f"{a[:40]!r} != {b[:40]!r}")


def json_fields(served: str, shadow: str, fields: Sequence[str] = ()) -> Verdict:
    """Agree when the named top-level fields (all of them when none are named) are equal in
    both answers' JSON; strings compared as labels. An answer that is not an object disagrees."""
    a, b = _object(served), _object(shadow)
    if a is None or b is None:
        return Verdict(False, 0.0, "an answer is not a JSON object")
    names = list(fields) or sorted(set(a) | set(b))
    same = [n for n in names if _norm(a.get(n)) == _norm(b.get(n))]
    score = len(same) / len(names) if names else 1.0
    differ = [n for n in names if n not in same]
    return Verdict(not differ, score, f"differ: {', '.join(differ)}" if differ else "")


def similarity(served: Sequence[float], shadow: Sequence[float], floor: float) -> Verdict:
    """Agree when the cosine similarity of the answers' embeddings is at least ``floor``."""
    dot = sum(x * y for x, y in zip(served, shadow))
    norm = math.sqrt(sum(x * x for x in served)) * math.sqrt(sum(y * y for y in shadow))
    cos = dot / norm if norm else 0.0
    return Verdict(cos >= floor, max(0.0, min(1.0, cos)), f"cosine {cos:.3f} (floor {floor})")


def rubric(prompt: str, first: str, second: str) -> str:
    """The judge prompt for one order of the pair."""
    return RUBRIC.format(prompt=prompt[:4000], first=first[:4000], second=second[:4000])


def parse_vote(text: str) -> bool | None:
    """SAME -> True, DIFFERENT -> False, anything else -> None (an unusable vote)."""
    words = normalize_label(text).split()
    for word in words[:5]:
        if word == "same":
            return True
        if word == "different":
            return False
    return None


def combine(first: bool | None, second: bool | None) -> Verdict:
    """The position-swapped verdict: agree only when both orders say SAME. A split means the
    judge's order decided, not the answers, so it counts as disagreement (score 0.5)."""
    votes = [v for v in (first, second) if v is not None]
    score = sum(votes) / len(votes) if votes else 0.0
    agree = first is True and second is True
    detail = f"votes {first}/{second}" + ("" if first == second else " (split)")
    return Verdict(agree, score, detail)


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _norm(value: Any) -> Any:
    return normalize_label(value) if isinstance(value, str) else value
