"""Shape a request for Gemini: tools and system instruction, then few-shot, then the turns.

The static part comes first and byte-stable (implicit caching matches on the prefix), or,
when an explicit cache holds it, is left out and named by ``cached_content``. Fields the chat
fidelity work adds to ChatRequest (images, tool_choice, response_schema, reasoning) are read
when present, so this works on requests with or without them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from models.domain.request import ChatRequest, Message, StaticPart

#: Thinking budgets for OpenAI-style efforts (Gemini 2.5 takes a budget in tokens; -1 is
#: dynamic). Pro cannot switch thinking off: its smallest budget is 128.
EFFORT_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576,
                 "xhigh": 32768}
PRO_MIN_BUDGET = 128


def static_parts(static: StaticPart) -> dict[str, Any]:
    """``system_instruction``, ``tools`` and the few-shot ``contents``: what a cache holds."""
    out: dict[str, Any] = {}
    if static.system:
        out["system_instruction"] = static.system
    if static.tools:
        out["tools"] = [{"function_declarations": [
            {"name": t.name, "description": t.description,
             "parameters_json_schema": t.parameters} for t in static.tools]}]
    out["contents"] = [_text_turn(m) for m in static.few_shot]
    return out


def contents(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The dynamic turns as Gemini contents: calls as functionCall parts of a model turn, a
    result as a functionResponse part (named by the call it answers) of a user turn."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
            for c in m.tool_calls:
                names[c.id] = c.name
                parts.append({"function_call": {"id": c.id, "name": c.name,
                                                "args": json.loads(c.arguments)}})
            out.append({"role": "model", "parts": parts})
        elif m.role == "tool":
            out.append({"role": "user", "parts": [{"function_response": {
                "id": m.tool_call_id, "name": names.get(str(m.tool_call_id), "tool"),
                "response": {"content": m.content}}}]})
        else:
            out.append(_text_turn(m))
    return out


def _text_turn(m: Message) -> dict[str, Any]:
    role = "model" if m.role == "assistant" else "user"
    images = getattr(m, "parts", ())
    if not images:
        return {"role": role, "parts": [{"text": m.content}]}
    parts: list[dict[str, Any]] = []
    for p in images:
        if getattr(p, "type", "") == "text":
            parts.append({"text": p.text})
        elif getattr(p, "data", None):
            parts.append({"inline_data": {"data": base64.b64decode(p.data),
                                          "mime_type": p.media_type}})
        else:
            parts.append({"file_data": {"file_uri": p.url, "mime_type": "image/*"}})
    return {"role": role, "parts": parts}


def generation_config(request: ChatRequest, model_name: str, *, cached: bool
                      ) -> dict[str, Any]:
    """The ``GenerateContentConfig`` fields of a request (SDK names, snake_case)."""
    cfg: dict[str, Any] = {"max_output_tokens": request.max_tokens,
                           "temperature": request.temperature,
                           # The SDK would call Python callables passed as tools; we pass none.
                           "automatic_function_calling": {"disable": True}}
    if request.stop:
        cfg["stop_sequences"] = list(request.stop)
    schema = getattr(request, "response_schema", None)
    if request.response_format in ("json", "json_schema"):
        cfg["response_mime_type"] = "application/json"
        if schema is not None:
            cfg["response_json_schema"] = schema.schema_
    choice = getattr(request, "tool_choice", None)
    if choice is not None and not cached:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}[choice.mode]
        calling: dict[str, Any] = {"mode": mode}
        if choice.mode == "function":
            calling["allowed_function_names"] = [choice.name]
        cfg["tool_config"] = {"function_calling_config": calling}
    budget = getattr(request, "thinking_budget", None)
    effort = getattr(request, "reasoning_effort", None)
    if budget is None and effort is not None:
        budget = EFFORT_BUDGET[effort]
    if budget is not None:
        if "pro" in model_name:
            budget = max(budget, PRO_MIN_BUDGET)
        # Thinking shares maxOutputTokens with the answer: it can never take all of it.
        cfg["thinking_config"] = {"thinking_budget": min(budget, request.max_tokens - 1)}
    return cfg


def gemini_request(request: ChatRequest, model_name: str, cached_content: str = ""
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(contents, config)`` for ``models.generate_content``. With ``cached_content`` the
    static part is in the cache: system instruction, tools and few-shot stay out."""
    cfg = generation_config(request, model_name, cached=bool(cached_content))
    dynamic = contents(request.messages)
    if cached_content:
        cfg["cached_content"] = cached_content
        return dynamic, cfg
    static = static_parts(request.static)
    cfg.update({k: v for k, v in static.items() if k != "contents"})
    return static["contents"] + dynamic, cfg


def cacheable(request: ChatRequest) -> bool:
    """Whether the static part may go into an explicit cache: a forced tool choice must ride
    with the tools in the cache (Gemini refuses tool_config beside cachedContent), so such
    requests stay on implicit caching."""
    return not request.static.is_empty() and getattr(request, "tool_choice", None) is None
