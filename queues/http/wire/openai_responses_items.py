"""Responses API ``input`` items to ChatRequest turns, and a result back to output items.

A run of assistant-side items (an assistant ``message``, ``function_call``s, ``reasoning``)
is one assistant turn: its text, its tool calls, and its reasoning items kept opaque for an
OpenAI model's Responses API (other providers never see them). ``function_call_output`` is a
``tool`` turn. The door and the stand-in share :func:`output_items`.
"""

from __future__ import annotations

from typing import Any

from models.domain.result import ChatResult
from queues.http.wire.common import bad

#: Input content part types a user (or system) message may hold.
_TEXT_PARTS = ("input_text", "output_text", "text")
_ASSISTANT_SIDE = ("function_call", "reasoning")


def input_turns(raw: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Leading system/developer text, and the conversation as ChatRequest turns."""
    if isinstance(raw, str):
        if not raw:
            bad("input", "input must not be empty")
        return [], [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        bad("input", "input must be a string or a non-empty array of input items")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            bad("input", f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            _message(item, where, system, turns)
        elif kind == "function_call":
            turn = _assistant(turns)
            if not all(isinstance(item.get(k), str) for k in ("call_id", "name")):
                bad("input", f"{where}: a function_call needs call_id and name")
            args = item.get("arguments", "{}")
            if not isinstance(args, str):
                bad("input", f"{where}.arguments must be a JSON string")
            turn.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "name": item["name"], "arguments": args or "{}"})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                bad("input", f"{where}: a function_call_output needs the call_id it answers")
            turns.append({"role": "tool", "tool_call_id": item["call_id"],
                          "content": _output_text(item.get("output"), where)})
        elif kind == "reasoning":
            if not isinstance(item.get("id"), str) or not isinstance(item.get("summary", []),
                                                                     list):
                bad("input", f"{where}: a reasoning item needs its id and summary")
            _assistant(turns).setdefault("reasoning", []).append(item)
        else:
            bad("input", f"{where}: {kind!r} items are not supported: send messages, "
                         "function_call, function_call_output and reasoning items")
    # A run of only reasoning (no text, no call) is nothing the model reads again.
    turns = [t for t in turns if t["role"] != "assistant" or t["content"] or t.get("tool_calls")]
    if not turns:
        bad("input", "input must hold at least one user message")
    return system, turns


def _assistant(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant turn being built (a run of assistant-side items), or a new one."""
    if turns and turns[-1]["role"] == "assistant" and turns[-1].get("_open"):
        return turns[-1]
    turn: dict[str, Any] = {"role": "assistant", "content": "", "_open": True}
    turns.append(turn)
    return turn


def close(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns without the parser's bookkeeping."""
    for t in turns:
        t.pop("_open", None)
    return turns


def _message(item: dict[str, Any], where: str, system: list[str],
             turns: list[dict[str, Any]]) -> None:
    role, content = item.get("role"), item.get("content")
    if role in ("system", "developer"):
        if turns:
            bad("input", f"{where}: system and developer messages must come before the "
                         "conversation (sluicegate sends them first, as the cacheable "
                         "prefix): put them first, or in instructions")
        system.append(_plain(content, where))
    elif role == "assistant":
        text = _plain(content, where)
        turn = _assistant(turns)
        turn["content"] = "\n".join(t for t in (turn["content"], text) if t)
    elif role == "user":
        turns.append({"role": "user", **_user(content, where)})
    else:
        bad("input", f"{where}.role must be user, assistant, system or developer")


def _plain(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        bad("input", f"{where}.content must be a string or an array of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            bad("input", f"{where}.content[{j}]: only text parts are allowed here (images go "
                         "in user messages)")
    return "\n".join(texts)


def _user(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"content": content}
    if not isinstance(content, list) or not content:
        bad("input", f"{where}.content must be a string or a non-empty array of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image", "url": part["image_url"],
                          "detail": part.get("detail") or "auto"})
        elif kind == "input_image":
            bad("input", f"{where}.content[{j}]: send the image as image_url (an https URL "
                         "or a data: URL); file_id needs OpenAI's file store")
        else:
            bad("input", f"{where}.content[{j}]: {kind!r} parts are not supported: send "
                         "input_text and input_image")
    if all(p["type"] == "text" for p in parts):
        return {"content": "\n".join(p["text"] for p in parts)}
    return {"parts": parts}


def _output_text(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return _plain(raw, f"{where}.output")
    bad("input", f"{where}.output must be a string or an array of input_text parts")


def tool_defs(raw: Any) -> list[dict[str, Any]]:
    """Function tools (``{"type": "function", "name", "parameters", ...}``) as ToolDefs."""
    if not isinstance(raw, list):
        bad("tools", "tools must be an array")
    out = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            bad("tools", f"tools[{i}]: only function tools are supported, not {kind!r} "
                         "(no model behind sluicegate runs hosted tools)")
        entry: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description") is not None:
            entry["description"] = tool["description"]
        if tool.get("parameters") is not None:
            entry["parameters"] = tool["parameters"]
        out.append(entry)
    return out


def tool_choice(raw: Any) -> dict[str, Any]:
    """``tool_choice`` (none, auto, required, or ``{"type": "function", "name"}``)."""
    if raw in ("none", "auto", "required"):
        return {"mode": raw}
    if isinstance(raw, dict) and raw.get("type") == "function" \
            and isinstance(raw.get("name"), str):
        return {"mode": "function", "name": raw["name"]}
    bad("tool_choice", "tool_choice must be 'none', 'auto', 'required' or "
                       "{'type': 'function', 'name': ...}")


# --- output ---------------------------------------------------------------------------------

def message_item(result: ChatResult, status: str = "completed") -> dict[str, Any]:
    """The assistant ``message`` item of ``result``."""
    return {"id": f"msg_{result.request_id}", "type": "message", "role": "assistant",
            "status": status, "content": [text_part(result.text)]}


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_items(result: ChatResult) -> list[dict[str, Any]]:
    """The answer's tool calls as ``function_call`` items."""
    return [{"id": f"fc_{result.request_id}_{i}", "type": "function_call", "status": "completed",
             "call_id": c.id, "name": c.name, "arguments": c.arguments}
            for i, c in enumerate(result.tool_calls)]


def reasoning_items(result: ChatResult, *, encrypted: bool) -> list[dict[str, Any]]:
    """The answer's reasoning items; ``encrypted_content`` only when the caller included it."""
    out = []
    for item in result.reasoning:
        shown = {k: v for k, v in item.items() if encrypted or k != "encrypted_content"}
        shown.setdefault("summary", [])
        out.append(shown)
    return out


def output_items(result: ChatResult, *, encrypted: bool, text_first: bool = False
                 ) -> list[dict[str, Any]]:
    """The output as OpenAI orders it (reasoning, message, calls); ``text_first``: as a relayed
    stream announced it (the text streams before the reasoning items are known)."""
    status = "incomplete" if result.finish_reason == "length" else "completed"
    message = [message_item(result, status)] if result.text or not result.tool_calls else []
    thoughts = reasoning_items(result, encrypted=encrypted)
    head = message + thoughts if text_first else thoughts + message
    return head + call_items(result)

