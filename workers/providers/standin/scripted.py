"""Scripted replies: a prompt that fixes its answer per model, and a judge with an order bias.

A prompt containing ``[[answer: X; gpt-4o-mini: Y]]`` is answered ``Y`` by gpt-4o-mini and
``X`` by every other model, so a test can make one tier wrong on one feature. A prompt in the
quality guard's rubric (models/domain/judges.py) is judged by word overlap, with a bias a real
LLM judge shows too: in the grey zone it calls the pair SAME when the longer answer comes first.
"""

from __future__ import annotations

import re

_SCRIPT = re.compile(r"\[\[answer: ([^;\]]+)((?:; [\w.\-]+: [^;\]]+)*)\]\]")
_RUBRIC = "You compare two answers to the same request."
_ANSWERS = re.compile(r"Answer 1:\n(.*?)\n\nAnswer 2:\n(.*?)\n\nVerdict:", re.DOTALL)
_WORD = re.compile(r"\w+")
#: Word overlap (Jaccard) at or above which the judge says SAME whatever the order, and below
#: which it says DIFFERENT whatever the order; in between, its order bias decides.
SAME_AT, DIFFERENT_BELOW = 0.6, 0.3


def scripted(model: str, last_user: str) -> str | None:
    """The fixed answer of ``model`` to a scripted prompt, or None (not scripted)."""
    if _RUBRIC in last_user:
        return judge(last_user)
    found = _SCRIPT.search(last_user)
    if found is None:
        return None
    for part in found.group(2).split(";")[1:]:
        name, _, answer = part.strip().partition(": ")
        if name == model:
            return answer.strip()
    return found.group(1).strip()


def overlap(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' lower-cased word sets."""
    x, y = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(x & y) / len(x | y) if x | y else 1.0


def judge(prompt: str) -> str:
    """SAME or DIFFERENT for a rubric prompt (DIFFERENT when the answers cannot be found)."""
    found = _ANSWERS.search(prompt)
    if found is None:
        return "DIFFERENT"
    first, second = found.group(1), found.group(2)
    score = overlap(first, second)
    if score >= SAME_AT:
        return "SAME"
    if score < DIFFERENT_BELOW:
        return "DIFFERENT"
    return "SAME" if len(first) >= len(second) else "DIFFERENT"
