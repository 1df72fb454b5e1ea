"""Generation options as the real APIs treat them: tool choice, reasoning, JSON, logprobs."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text, encoding
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.replies import WORDS, ToolUse, clip, tool_use

#: Chat-completions parameters the stand-in knows; anything else is a 400, as OpenAI's is.
OPENAI_PARAMS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "reasoning_effort", "verbosity", "prediction", "service_tier",
    "metadata", "store", "modalities"})
#: Messages parameters the stand-in knows (Anthropic: "Extra inputs are not permitted").
ANTHROPIC_PARAMS = frozenset({
    "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k",
    "stop_sequences", "stream", "tools", "tool_choice", "thinking", "metadata",
    "service_tier", "output_config"})
#: Reasoning tokens an OpenAI reasoning model spends per effort (before max_completion_tokens).
OPENAI_REASONING = {"none": 0, "minimal": 16, "low": 64, "medium": 192, "high": 512,
                    "xhigh": 1024}


def unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    """Refuse a parameter the API does not take, naming it."""
    for name in body:
        if name not in known:
            raise RequestInvalid(f"Unrecognized request argument supplied: {name}", param=name)


def choose_call(choice: Any, last_user: str, tools: list[str], *, answered: bool
                ) -> ToolUse | None:
    """The call to answer with under a tool choice: ``none`` never calls, a forced choice
    always does (the named tool, or the one the prompt asks for, or the first), ``auto``
    when the prompt says "use tool NAME"."""
    asked = None if answered else tool_use(last_user, tools)
    if choice in (None, "auto"):
        return asked
    if choice == "none":
        return None
    name = choice if isinstance(choice, str) else None
    if name in ("required", "any"):
        name = asked.name if asked is not None else (tools[0] if tools else None)
    if name is None:
        raise RequestInvalid(f"tool_choice: {choice!r} names no tool", param="tool_choice")
    if name not in tools:
        raise RequestInvalid(f"tool_choice: {name!r} is not one of the tools", param="tool_choice")
    arguments = json.dumps({"request": last_user[:200]}, separators=(",", ":"))
    return ToolUse(name=name, arguments=arguments, tokens=count_text(arguments))


def json_text(seed: str, schema: Any) -> str:
    """A JSON answer that follows ``schema`` (objects, arrays, strings, numbers, booleans,
    enums), words picked from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return json.dumps(_value(schema if isinstance(schema, dict) else {}, digest, 0),
                      separators=(",", ":"))


def _value(schema: dict[str, Any], digest: bytes, depth: int) -> Any:
    if "enum" in schema and schema["enum"]:
        return schema["enum"][digest[depth % 32] % len(schema["enum"])]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties") or {}
        keys = list(props) if props else ["answer"]
        return {k: _value(props.get(k) or {"type": "string"}, digest, depth + i + 1)
                for i, k in enumerate(keys) if depth < 6}
    if kind == "array":
        return [_value(schema.get("items") or {"type": "string"}, digest, depth + 1)]
    if kind in ("integer", "number"):
        return digest[depth % 32]
    if kind == "boolean":
        return digest[depth % 32] % 2 == 0
    return WORDS[digest[depth % 32] % len(WORDS)]


def reasoning_tokens(spec: ModelSpec, effort: Any, max_tokens: int) -> int:
    """What an OpenAI reasoning model spends thinking; a 400 when the model does not reason
    or takes no such effort."""
    if effort is not None and not spec.can("reasoning"):
        raise RequestInvalid("Unrecognized request argument supplied: reasoning_effort "
                             f"({spec.name} does not reason)", param="reasoning_effort")
    if not spec.can("reasoning"):
        return 0
    effort = effort or "medium"
    if effort not in spec.reasoning_efforts:
        raise RequestInvalid(f"Unsupported value: 'reasoning_effort' does not support "
                             f"{effort!r} with this model. Supported values are: "
                             f"{', '.join(spec.reasoning_efforts)}.", param="reasoning_effort")
    return min(OPENAI_REASONING[effort], max_tokens)


def thinking_text(seed: str, tokens: int) -> str:
    """Thinking of about ``tokens`` tokens (words of one token each), from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return " ".join(WORDS[digest[i % 32] * (i + 1) % len(WORDS)] for i in range(tokens))


def logprobs_of(text: str, top: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for ``text``: one entry per token, with ``top`` others."""
    enc = encoding()
    pieces = ([enc.decode([t]) for t in enc.encode(text, disallowed_special=())]
              if enc is not None else text.split(" "))
    out = []
    for i, piece in enumerate(pieces):
        lp = -round(0.01 + (i % 7) / 10, 4)
        alts = [{"token": piece, "logprob": lp, "bytes": list(piece.encode())}]
        alts += [{"token": w, "logprob": round(lp - 1 - k, 4), "bytes": list(w.encode())}
                 for k, w in enumerate(WORDS[i % 50:i % 50 + max(top - 1, 0)])]
        out.append({"token": piece, "logprob": lp, "bytes": list(piece.encode()),
                    "top_logprobs": alts[:top]})
    return out


def check_range(body: dict[str, Any], name: str, low: float, high: float) -> None:
    """A numeric parameter within [low, high], or a 400 naming it."""
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
            value) or not low <= value <= high:
        raise RequestInvalid(f"{name} must be a number between {low:g} and {high:g}",
                             param=name)


def fit(text: str, limit: int) -> tuple[str, int, bool]:
    """``text`` within ``limit`` tokens: (text, its tokens, whether it was cut)."""
    tokens = count_text(text)
    if tokens <= limit:
        return text, tokens, False
    text = clip(text, max(limit, 0)) if limit > 0 else ""
    return text, count_text(text), True
