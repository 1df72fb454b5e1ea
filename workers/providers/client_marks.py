"""A caller's own ``cache_control`` breakpoints, kept as sent; ours stay only where they fit.

The caller knows its prompt (an agent marks the end of its system prompt and its latest turn),
so its marks are placed exactly where it put them. Our marks (``shaping.anthropic_payload``)
are dropped from a segment the caller marked itself, and, past Anthropic's limit of four,
dropped earliest first.
"""

from __future__ import annotations

from typing import Any

from models.domain.request import CacheMark, ChatRequest

MAX_BREAKPOINTS = 4


def _control(mark: CacheMark) -> dict[str, Any]:
    return {"type": "ephemeral", **({"ttl": "1h"} if mark.ttl == "1h" else {})}


def split_system(text: str, marks: list[CacheMark]) -> list[dict[str, Any]]:
    """The system prompt as text blocks cut at the marked offsets (block ends), each marked;
    the blank line the door joined blocks with is taken off again."""
    blocks: list[dict[str, Any]] = []
    start = 0
    for mark in sorted(marks, key=lambda m: m.index):
        end = min(mark.index, len(text))
        if end <= start:
            continue
        piece = text[start:end]
        blocks.append({"type": "text", "text": piece.removeprefix("\n\n") if start else piece,
                       "cache_control": _control(mark)})
        start = end
    if start < len(text):
        rest = text[start:]
        blocks.append({"type": "text", "text": rest.removeprefix("\n\n") if start else rest})
    return [b for b in blocks if b["text"]]


def apply_client_marks(payload: dict[str, Any], request: ChatRequest,
                       ours: list[dict[str, Any]], positions: list[tuple[int, int]]) -> None:
    """Place ``request.cache_marks`` in ``payload``; ``ours`` are the blocks we marked (in
    prompt order), ``positions[i]`` the (turn, block) message ``i`` became."""
    marks = request.cache_marks
    if not marks:
        return
    tools = payload.get("tools") or []
    system = payload.get("system") or []
    claimed = {m.at for m in marks}
    for segment, blocks in (("tools", tools), ("system", system)):
        if segment in claimed and blocks:
            blocks[-1].pop("cache_control", None)
            ours[:] = [b for b in ours if b is not blocks[-1]]
    for mark in marks:
        if mark.at == "tools" and mark.index < len(tools):
            tools[mark.index]["cache_control"] = _control(mark)
        elif mark.at == "messages" and mark.index < len(positions):
            turn, block = positions[mark.index]
            content = payload["messages"][turn]["content"]
            if isinstance(content, str):
                content = payload["messages"][turn]["content"] = [{"type": "text",
                                                                   "text": content}]
            content[block]["cache_control"] = _control(mark)
    system_marks = [m for m in marks if m.at == "system"]
    if system_marks and request.static.system:
        payload["system"] = split_system(request.static.system, system_marks)
    placed = [b for b in _blocks(payload) if "cache_control" in b]
    mine = list(ours)
    while mine and len(placed) > MAX_BREAKPOINTS:
        dropped = mine.pop(0)
        if any(dropped is t for t in _client_marked(payload, request, positions)):
            continue
        dropped.pop("cache_control", None)
        placed = [b for b in _blocks(payload) if "cache_control" in b]


def _blocks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[Any] = list(payload.get("tools") or []) + list(payload.get("system") or [])
    for msg in payload.get("messages") or []:
        if isinstance(msg.get("content"), list):
            blocks += msg["content"]
    return [b for b in blocks if isinstance(b, dict)]


def _client_marked(payload: dict[str, Any], request: ChatRequest,
                   positions: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The blocks carrying the caller's marks (never dropped)."""
    out: list[dict[str, Any]] = []
    tools = payload.get("tools") or []
    for mark in request.cache_marks:
        if mark.at == "tools" and mark.index < len(tools):
            out.append(tools[mark.index])
        elif mark.at == "messages" and mark.index < len(positions):
            turn, block = positions[mark.index]
            out.append(payload["messages"][turn]["content"][block])
    if any(m.at == "system" for m in request.cache_marks):
        out += [b for b in payload.get("system") or [] if "cache_control" in b]
    return out
