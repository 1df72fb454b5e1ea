"""Deterministic replies: common English words seeded by the model and the prompt."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from models.domain.tokens import count_text, encoding

# Frequent words that o200k encodes as one token each (with their leading space), so a reply
# clipped at a word boundary lands on max_tokens almost exactly.
WORDS: tuple[str, ...] = tuple("""
the of and to in is that it for was on are as with be at this have from or by one had not
but what all were when we there can an your which their said if do will each about how up
out them then she many some so these would other into has more her two like him see time
could no make than first been its who now people my made over did down only way find use
may water long little very after words called just where most know get through back much
go good new write our me man too any day same right look think also around another came
come work three word must because does part even place well such here take why things help
put years different away again off went old number great tell men say small every found
still between name should home big give air line set own under read last never us left end
along while might next sound below saw something thought both few those always looked show
large often together asked house world going want school important until form food keep
children feet land side without boy once animals life enough took sometimes four head above
kind began almost live page got earth need far hand high year mother light parts country
father let night following picture being study second eyes soon times story boys since white
days ever paper hard near sentence better best across during today others however sure means
knew try told young miles sun ways thing whole hear example heard several change answer room
sea against top turned learn point city play toward five using himself usually money seen
""".split())

#: A prompt that says "use tool NAME" (NAME among the request's tools) is answered by a call.
_USE_TOOL = re.compile(r"\buse tool ([A-Za-z0-9_\-]{1,64})\b")
_LONG = re.compile(r"\b(article|essay|in detail|detailed|comprehensive|step by step|story|"
                   r"thorough|long)\b", re.IGNORECASE)
_SHORT = re.compile(r"\b(rephrase|classify|classification|yes or no|one word|label|sentiment|"
                    r"extract|translate)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Reply:
    """A generated reply: its text, its exact token count, and why it ended."""

    text: str
    tokens: int
    #: "stop" (natural end), "length" (cut by max_tokens) or "stop_sequence".
    finish: str
    stop_sequence: str | None = None


def natural_length(rng: random.Random, last_user: str) -> int:
    """Words in the uncut reply: long for essays and detailed explanations, short for labels."""
    if _SHORT.search(last_user):
        return rng.randint(2, 8)
    if _LONG.search(last_user):
        return rng.randint(250, 450)
    return rng.randint(15, 60)


def natural_text(seed: str, last_user: str) -> str:
    """The full reply the stand-in would give with no limit, a function of ``seed`` only
    (and of the model, for a scripted prompt: workers/providers/standin/scripted.py)."""
    from workers.providers.standin.scripted import scripted

    fixed = scripted(seed.split("|", 1)[0], last_user)
    if fixed is not None:
        return fixed
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    total = natural_length(rng, last_user)
    pieces: list[str] = []
    while len(pieces) < total:
        sentence = rng.choices(WORDS, k=min(rng.randint(5, 14), total - len(pieces)))
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        pieces.extend(sentence)
    return " ".join(pieces)


def make_reply(seed: str, last_user: str, max_tokens: int | None,
               stop: list[str] | None = None) -> Reply:
    """The reply for a prompt: cut at the first stop sequence, then clipped to ``max_tokens``."""
    text = natural_text(seed, last_user)
    finish, matched = "stop", None
    cut = [(text.find(s), s) for s in stop or () if s and s in text]
    if cut:
        index, matched = min(cut)
        text, finish = text[:index], "stop_sequence"
    tokens = count_text(text)
    if max_tokens is not None and tokens > max_tokens:
        text = clip(text, max_tokens)
        tokens, finish, matched = count_text(text), "length", None
    return Reply(text=text, tokens=tokens, finish=finish, stop_sequence=matched)


def clip(text: str, max_tokens: int) -> str:
    """A prefix of ``text`` that fits in ``max_tokens``: exactly that many tokens when possible."""
    enc = encoding()
    if enc is not None:
        # Real providers stop at exactly max_tokens; a token-level cut does that whenever the
        # decoded prefix re-encodes to the same count (almost always, for plain words).
        head = enc.decode(enc.encode(text, disallowed_special=())[:max_tokens])
        if count_text(head) == max_tokens:
            return head
    pieces = text.split(" ")
    lo, hi = 0, len(pieces)  # invariant: pieces[:lo] fits, pieces[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_text(" ".join(pieces[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(pieces[:lo])


@dataclass(frozen=True)
class ToolUse:
    """A tool call the stand-in answers with: the tool, its arguments (JSON text), their tokens."""

    name: str
    arguments: str
    tokens: int


def next_tool(last_user: str, tools: Iterable[str], called: set[str]) -> str | None:
    """After a tool's result: the next tool the prompt asks for ("use tool A, then use tool
    B") that the conversation has not called yet, else None (the model answers in text)."""
    names = set(tools)
    for found in _USE_TOOL.finditer(last_user):
        if found.group(1) in names and found.group(1) not in called:
            return found.group(1)
    return None


def tool_use(last_user: str, tools: Iterable[str]) -> ToolUse | None:
    """The call a prompt asks for ("use tool NAME", NAME one of ``tools``), else None."""
    found = _USE_TOOL.search(last_user)
    if found is None or found.group(1) not in set(tools):
        return None
    arguments = json.dumps({"request": last_user[:200]}, separators=(",", ":"))
    return ToolUse(name=found.group(1), arguments=arguments, tokens=count_text(arguments))
