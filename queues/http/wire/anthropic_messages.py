"""Anthropic Messages bodies to ChatRequest fields (``POST /v1/messages``, ``count_tokens``).

The system prompt (a string or text blocks) becomes the cacheable static part with the tools;
``tool_use`` / ``tool_result`` blocks become the tool-loop turns ChatRequest already carries,
so a request routed to an OpenAI or self-hosted model is translated there by the adapters.
The client's ``cache_control`` marks are kept as :class:`~models.domain.request.CacheMark`s.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from models.db.api_keys import KeyInfo
from models.domain.result import ChatResult
from queues.http.errors import Problem
from queues.http.wire import anthropic_messages_render as render
from queues.http.wire.base import Parsed
from queues.http.wire.common import bad, base_request

HANDLED = frozenset({"model", "messages", "max_tokens", "system", "tools", "tool_choice",
                     "stop_sequences", "temperature", "top_p", "top_k", "thinking", "metadata",
                     "stream", "service_tier"})
#: Beside the body, these request headers go on to the provider as the client sent them.
FORWARDED = ("anthropic-version", "anthropic-beta")
#: Anthropic accepts at most this many cache_control breakpoints per request.
MAX_MARKS = 4
#: A dated model id (``claude-sonnet-4-5-20250929``), as agents send: its catalogue alias.
_DATED = re.compile(r"^(claude-[a-z0-9.-]+?)-(?:\d{8}|latest)$")
#: What ChatRequest takes as a user id; other ``metadata.user_id`` values are digested.
_USER = re.compile(r"^[A-Za-z0-9._:\-/]{1,64}$")
#: Where the fields of a count_tokens body or a messages body came from.
_ORIGIN = {"static": "system", "system": "system", "messages": "messages", "tools": "tools",
           "max_tokens": "max_tokens", "temperature": "temperature", "stop": "stop_sequences",
           "user": "metadata.user_id", "cache_marks": "cache_control",
           "thinking_budget": "thinking", "parallel_tool_calls": "tool_choice"}


class AnthropicMessages:
    """The Messages wire format."""

    name = "anthropic_messages"

    def parse(self, body: dict[str, Any], headers: Any, key: KeyInfo) -> Parsed:
        """ChatRequest fields for a Messages body; a ValidationError names its field."""
        data, origin = to_request(body, headers, key)
        stream = body.get("stream")
        if not (stream is None or isinstance(stream, bool)):
            bad("stream", "stream: Input should be a valid boolean")
        return Parsed(data, origin, bool(stream))

    def render(self, result: ChatResult) -> dict[str, Any]:
        return render.message_body(result)

    def encoder(self, request_id: str, model: str, parsed: Parsed) -> render.Events:
        return render.Events(request_id, model)

    def error(self, problem: Problem) -> Any:
        return render.error_response(problem)


def to_request(body: dict[str, Any], headers: Any, key: KeyInfo, *,
               counting: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """ChatRequest fields for a Messages body (``counting``: a count_tokens body, which has
    no ``max_tokens``), and where each came from."""
    for name in body:
        if name not in HANDLED:
            bad(name, f"{name}: Extra inputs are not permitted")
    if counting:
        for name in ("max_tokens", "stream", "stop_sequences", "temperature", "top_p",
                     "top_k", "metadata", "service_tier"):
            if name in body:
                bad(name, f"{name}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        bad("model", "model: Field required")
    dated = _DATED.match(body["model"])
    data, origin = base_request(headers, team=key.team, org=key.org, key_id=key.id,
                                model=dated.group(1) if dated else body["model"],
                                default_feature=key.feature)
    origin.update(_ORIGIN)
    marks: list[dict[str, Any]] = []
    static: dict[str, Any] = {}
    tools = _tools(body.get("tools"), marks)
    if tools:
        static["tools"] = tools
    system = _system(body.get("system"), marks)
    if system:
        static["system"] = system
    if static:
        data["static"] = static
    data["messages"] = _messages(body.get("messages"), marks)
    if len(marks) > MAX_MARKS:
        bad("cache_control", f"A maximum of {MAX_MARKS} blocks with cache_control may be "
                             f"provided. Found {len(marks)}.")
    if marks:
        data["cache_marks"] = marks
    _generation(body, data)
    if not counting:
        _sampling(body, data)
    sent = {h: headers[h] for h in FORWARDED if headers.get(h)}
    if sent:
        data["provider_headers"] = sent
    return data, origin


def _sampling(body: dict[str, Any], data: dict[str, Any]) -> None:
    tokens = body.get("max_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        bad("max_tokens", "max_tokens: Field required (a positive integer)")
    data["max_tokens"] = tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
                or not 0 <= temperature <= 1:
            bad("temperature", "temperature: must be a number between 0 and 1")
        data["temperature"] = temperature
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            bad("stop_sequences", "stop_sequences: must be an array of non-empty strings")
        data["stop"] = stops
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or set(meta) - {"user_id"}:
            bad("metadata", "metadata: only user_id is accepted")
        user = meta.get("user_id")
        if user is not None and not isinstance(user, str):
            bad("metadata.user_id", "metadata.user_id: must be a string")
        if user and "user" not in data:  # x-sluice-user wins
            # Agents send long opaque ids (Claude Code: user_<hash>_account_..._session_...);
            # one that does not fit the ledger's user column is kept as a stable digest.
            data["user"] = user if _USER.match(user) else \
                "u-" + hashlib.sha256(user.encode()).hexdigest()[:32]
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        bad("service_tier", "service_tier: must be 'auto' or 'standard_only'")


def _generation(body: dict[str, Any], data: dict[str, Any]) -> None:
    """Tool choice, extended thinking and sampling, as ChatRequest's provider-neutral fields
    (models/domain/params.py then says what the routed model gets, or refuses by name)."""
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in _CHOICES or (kind == "tool") != isinstance(choice.get("name"), str):
            bad("tool_choice", "tool_choice: must be {'type': 'auto' | 'any' | 'none'} or "
                               "{'type': 'tool', 'name': ...}")
        data["tool_choice"] = {"mode": _CHOICES[kind],
                               **({"name": choice["name"]} if kind == "tool" else {})}
        if choice.get("disable_parallel_tool_use"):
            data["parallel_tool_calls"] = False
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        budget = thinking.get("budget_tokens") if kind == "enabled" else None
        if kind == "enabled" and isinstance(budget, int) and not isinstance(budget, bool):
            data["thinking_budget"] = budget  # billed as output, within max_tokens
        elif kind != "disabled":
            bad("thinking", "thinking: must be {'type': 'enabled', 'budget_tokens': N} (N at "
                            "least 1024, below max_tokens) or {'type': 'disabled'}")
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            data[name] = body[name]


_CHOICES = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}


def _mark(block: dict[str, Any], where: str, at: str, index: int,
          marks: list[dict[str, Any]]) -> None:
    control = block.get("cache_control")
    if control is None:
        return
    if not isinstance(control, dict) or control.get("type") != "ephemeral" \
            or control.get("ttl", "5m") not in ("5m", "1h"):
        bad("cache_control", f"{where}.cache_control: must be {{'type': 'ephemeral'}} with an "
                             "optional ttl of '5m' or '1h'")
    marks.append({"at": at, "index": index, "ttl": control.get("ttl", "5m")})


def _tools(raw: Any, marks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        bad("tools", "tools: Input should be a valid list")
    out = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            bad("tools", f"tools.{i}: only custom tools ({{name, description, input_schema}}) "
                         "are supported; server tools are not")
        if not isinstance(tool.get("input_schema"), dict):
            bad("tools", f"tools.{i}.input_schema: Field required (a JSON schema object)")
        extra = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
        if extra:
            bad("tools", f"tools.{i}: Extra inputs are not permitted: {sorted(extra)}")
        entry: dict[str, Any] = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if tool.get("description") is not None:
            entry["description"] = tool["description"]
        out.append(entry)
        _mark(tool, f"tools.{i}", "tools", i, marks)
    return out


def _system(raw: Any, marks: list[dict[str, Any]]) -> str:
    """The system prompt as one string; a marked block's end is kept as a character offset
    (blocks are joined by a blank line, which the Anthropic adapter splits off again)."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    if not isinstance(raw, list):
        bad("system", "system: must be a string or an array of text blocks")
    text = ""
    for j, block in enumerate(raw):
        if not (isinstance(block, dict) and block.get("type") == "text"
                and isinstance(block.get("text"), str)):
            bad("system", f"system.{j}: system blocks must be text blocks")
        text += ("\n\n" if j else "") + block["text"]
        _mark(block, f"system.{j}", "system", len(text), marks)
    return text


def _messages(raw: Any, marks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        bad("messages", "messages: at least one message is required")
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            bad("messages", f"{where}.role: Input should be 'user' or 'assistant'")
        content = msg.get("content")
        if isinstance(content, str):
            turns.append({"role": msg["role"], "content": content})
            continue
        if not isinstance(content, list) or not content:
            bad("messages", f"{where}.content: must be a string or a non-empty array")
        if msg["role"] == "user":
            _user_blocks(content, where, turns, marks)
        else:
            _assistant_blocks(content, where, turns, marks)
    if turns and turns[-1]["role"] == "assistant":
        bad("messages", "messages: the last message must be the user's (a prefilled "
                        "assistant turn is not supported)")
    return turns


def _user_blocks(blocks: list[Any], where: str, turns: list[dict[str, Any]],
                 marks: list[dict[str, Any]]) -> None:
    """Tool results first (each a ``tool`` turn), then the turn's text (and images, in
    order) as one user turn."""
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    marked_text: dict[str, Any] | None = None
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            marked_text = block if block.get("cache_control") is not None else marked_text
        elif kind == "tool_result":
            turns.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                          "content": _result_text(block, at)})
            _mark(block, at, "messages", len(turns) - 1, marks)
        elif kind == "image":
            parts.append(_image(block, at))
            marked_text = block if block.get("cache_control") is not None else marked_text
            continue
        else:
            bad("messages", f"{at}: a user turn holds text, image and tool_result blocks")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
    if parts and len(parts) > len(texts):  # images: the turn keeps its parts in order
        turns.append({"role": "user", "parts": parts})
    elif texts:
        turns.append({"role": "user", "content": "\n".join(texts)})
    if (parts or texts) and marked_text is not None:
        _mark(marked_text, where, "messages", len(turns) - 1, marks)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    """An image block as an ImagePart's fields: bytes with their media type, or a URL."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str):
        return {"type": "image", "data": source["data"], "media_type": source.get("media_type")}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image", "url": source["url"]}
    bad("messages", f"{where}.source: must be {{'type': 'base64', 'media_type': ..., "
                    "'data': ...}} or {'type': 'url', 'url': 'https://...'}")


def _result_text(block: dict[str, Any], where: str) -> str:
    inner = block.get("content", "")
    if isinstance(inner, list):
        parts = []
        for k, part in enumerate(inner):
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                bad("messages", f"{where}.content.{k}: tool results carry text blocks only")
            parts.append(part["text"])
        inner = "\n".join(parts)
    if not isinstance(inner, str):
        bad("messages", f"{where}.content: must be a string or an array of text blocks")
    # ChatRequest has no error flag on a result: the model reads that the tool failed.
    return f"Error: {inner}" if block.get("is_error") else inner


def _assistant_blocks(blocks: list[Any], where: str, turns: list[dict[str, Any]],
                      marks: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    marked = False
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("input"), dict):
                bad("messages", f"{at}.input: must be an object")
            calls.append({"id": block.get("id"), "name": block.get("name"),
                          "arguments": json.dumps(block["input"], separators=(",", ":"))})
        elif kind in ("thinking", "redacted_thinking"):
            # Kept unchanged: a thinking tool loop must send the last turn's back (signed).
            thinking.append(_thinking_block(block, at))
            continue
        else:
            bad("messages", f"{at}: an assistant turn holds text, tool_use and thinking blocks")
        marked = marked or block.get("cache_control") is not None
    if not (texts or calls):
        return  # only thinking: nothing the model reads again
    turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        turn["tool_calls"] = calls
    if thinking:
        turn["thinking"] = thinking
    turns.append(turn)
    if marked:
        marks.append({"at": "messages", "index": len(turns) - 1,
                      "ttl": _ttl_of(blocks)})


def _thinking_block(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A thinking block as sent back: its text and signature, or redacted data."""
    if block["type"] == "redacted_thinking":
        if not isinstance(block.get("data"), str) or set(block) - {"type", "data"}:
            bad("messages", f"{where}: a redacted_thinking block is {{'type', 'data'}}")
        return {"type": "redacted_thinking", "data": block["data"]}
    if not (isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str)) \
            or set(block) - {"type", "thinking", "signature"}:
        bad("messages", f"{where}: a thinking block is {{'type', 'thinking', 'signature'}}, "
                        "sent back as the model returned it")
    return {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}


def _ttl_of(blocks: list[Any]) -> str:
    for block in blocks:
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(control, dict):
            return str(control.get("ttl", "5m"))
    return "5m"
