"""Shape a request for Gemini: tools and system instruction, then few-shot, then the turns.

The static part comes first and byte-stable (implicit caching matches on the prefix), or,
when an explicit cache holds it, is left out and named by ``cached_content``. Efforts map to
thinking budgets as for Anthropic (models/domain/params.py); "none" is a budget of 0.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.content import TextPart
from models.domain.params import dropped_params, thinking_budget
from models.domain.request import ChatRequest, Message, StaticPart

#: Gemini 2.5 Pro cannot switch thinking off: its smallest budget is 128.
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
    images = m.parts
    if not images:
        return {"role": role, "parts": [{"text": m.content}]}
    parts: list[dict[str, Any]] = []
    for p in images:
        if isinstance(p, TextPart):
            parts.append({"text": p.text})
        elif p.data:
            parts.append({"inline_data": {"data": base64.b64decode(p.data),
                                          "mime_type": p.media_type}})
        else:
            parts.append({"file_data": {"file_uri": p.url}})
    return {"role": role, "parts": parts}


def generation_config(request: ChatRequest, model: ModelSpec, *, cached: bool
                      ) -> dict[str, Any]:
    """The ``GenerateContentConfig`` fields of a request (SDK names, snake_case); what the
    caller let be dropped (models/domain/params.py) stays out."""
    dropped = set(dropped_params(request, model))
    cfg: dict[str, Any] = {"max_output_tokens": request.max_tokens,
                           # The SDK would call Python callables passed as tools; we pass none.
                           "automatic_function_calling": {"disable": True}}
    if "temperature" not in dropped:
        cfg["temperature"] = request.temperature
    for name in ("top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        if getattr(request, name) is not None and name not in dropped:
            cfg[name] = getattr(request, name)
    if request.stop:
        cfg["stop_sequences"] = list(request.stop)
    if request.response_format in ("json", "json_schema") and "response_format" not in dropped:
        cfg["response_mime_type"] = "application/json"
        if request.response_schema is not None:
            cfg["response_json_schema"] = request.response_schema.schema_
    choice = request.tool_choice
    if choice is not None and not cached and "tool_choice" not in dropped:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}[choice.mode]
        calling: dict[str, Any] = {"mode": mode}
        if choice.mode == "function":
            calling["allowed_function_names"] = [choice.name]
        cfg["tool_config"] = {"function_calling_config": calling}
    budget = gemini_budget(request, model)
    if budget is not None and not dropped & {"reasoning_effort", "thinking_budget"}:
        cfg["thinking_config"] = {"thinking_budget": budget}
    return cfg


def gemini_budget(request: ChatRequest, model: ModelSpec) -> int | None:
    """``thinkingBudget`` for the request (None: the model's dynamic default). Thinking shares
    maxOutputTokens with the answer, so the budget stays below it."""
    if request.reasoning_effort == "none":
        return 0
    budget = thinking_budget(request)
    if budget is None:
        return None
    if "none" not in model.reasoning_efforts:
        budget = max(budget, PRO_MIN_BUDGET)  # Pro cannot switch thinking off
    return min(budget, request.max_tokens - 1)


def gemini_request(request: ChatRequest, model: ModelSpec, cached_content: str = ""
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(contents, config)`` for ``models.generate_content``. With ``cached_content`` the
    static part is in the cache: system instruction, tools and few-shot stay out."""
    cfg = generation_config(request, model, cached=bool(cached_content))
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
    return not request.static.is_empty() and request.tool_choice is None
