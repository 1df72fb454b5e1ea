"""Shape a request for each provider: the static part first, as a byte-stable cached prefix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.domain.catalogue import ModelSpec
from models.domain.content import ImagePart
from models.domain.params import dropped_params, openai_effort, thinking_budget
from models.domain.request import ChatRequest, Message, StaticPart
from models.domain.tokens import PER_MESSAGE, count_text
from workers.providers.client_marks import apply_client_marks

if TYPE_CHECKING:
    from workers.providers.base import ProviderCall

#: Anthropic accepts at most this many cache_control breakpoints per request.
MAX_BREAKPOINTS = 4


def static_tokens(static: StaticPart) -> int:
    """Tokens of the static prefix (same counting rule as the whole-prompt estimate)."""
    total = 0
    if static.system:
        total += PER_MESSAGE + count_text(static.system)
    for m in static.few_shot:
        total += PER_MESSAGE + count_text(m.content)
    for t in static.tools:
        total += PER_MESSAGE + count_text(t.name) + count_text(t.description)
        total += count_text(str(t.parameters))
    return total


def static_fingerprint(static: StaticPart) -> str:
    """A stable hash of the static part: canonical JSON, sorted keys."""
    blob = json.dumps(static.stable_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# --- OpenAI -------------------------------------------------------------------------------

def openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """System prompt, then few-shot, then the dynamic turns: the stable prefix comes first."""
    out: list[dict[str, Any]] = []
    if request.static.system:
        out.append({"role": "system", "content": request.static.system})
    out += [{"role": m.role, "content": m.content} for m in request.static.few_shot]
    out += [m.to_openai() for m in request.messages]
    return out


def openai_tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """Tool definitions in OpenAI's function format, in declared order."""
    if not request.static.tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}}
            for t in request.static.tools]


def openai_cache_key(request: ChatRequest, scope: str) -> str | None:
    """``prompt_cache_key``: the same static prefix in the same scope lands on the same cache."""
    if request.static.is_empty():
        return None
    digest = hashlib.sha256(f"{scope}\x00{static_fingerprint(request.static)}".encode())
    return "sg-" + digest.hexdigest()[:40]


# --- Anthropic ----------------------------------------------------------------------------

def anthropic_payload(request: ChatRequest, model: ModelSpec, ttl: str = "5m",
                      *, thinking: bool = False) -> dict[str, Any]:
    """``system``, ``messages`` and ``tools`` with cache breakpoints closing the static part.

    Anthropic caches the prefix up to each ``cache_control`` marker, in the order tools →
    system → messages. A marker goes at the end of each static segment (tools, system,
    few-shot) once the prefix up to it reaches the model's minimum cacheable length: the last
    one caches the whole static part, the earlier ones still hit when a later segment changes
    (features sharing one system prompt with different few-shot examples). Below the minimum
    the provider silently caches nothing, so no marker is sent. With ``thinking`` on, the
    assistant turns carry their thinking blocks back as the client got them.
    """
    static = request.static
    tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
             for t in static.tools]
    system = [{"type": "text", "text": static.system}] if static.system else []
    few_shot = [{"role": m.role, "content": [{"type": "text", "text": m.content}]}
                for m in static.few_shot]
    positions: list[tuple[int, int]] = []
    dynamic = anthropic_turns(request.messages, positions, offset=len(few_shot),
                              thinking=thinking)
    marker: dict[str, Any] = {"type": "ephemeral"}
    if ttl == "1h":
        marker["ttl"] = "1h"
    prefix = 0
    ours: list[dict[str, Any]] = []
    segments: list[tuple[int, dict[str, Any] | None]] = [
        (sum(PER_MESSAGE + count_text(t.name) + count_text(t.description)
             + count_text(str(t.parameters)) for t in static.tools), tools[-1] if tools else None),
        (PER_MESSAGE + count_text(static.system) if system else 0,
         system[-1] if system else None),
        (sum(PER_MESSAGE + count_text(m.content) for m in static.few_shot),
         few_shot[-1]["content"][-1] if few_shot else None),
    ]
    for tokens, last_block in segments:
        prefix += tokens
        if last_block is not None and prefix >= model.min_cacheable_tokens:
            last_block["cache_control"] = dict(marker)
            ours.append(last_block)
    payload: dict[str, Any] = {"messages": few_shot + dynamic}
    if system:
        payload["system"] = system
    if tools:
        payload["tools"] = tools
    # The caller's own breakpoints (the Messages door) are kept as sent; ours fit around them.
    apply_client_marks(payload, request, ours, positions)
    assert count_breakpoints(payload) <= MAX_BREAKPOINTS
    return payload


def anthropic_turns(messages: Sequence[Message], positions: list[tuple[int, int]] | None = None,
                    *, offset: int = 0, thinking: bool = False) -> list[dict[str, Any]]:
    """The dynamic turns in Anthropic's shape: a call is a ``tool_use`` block of the assistant
    turn, and results (with any user text after them) are ``tool_result`` blocks of one user
    turn, as the Messages API wants them. ``positions`` gets, per message, the (turn + offset,
    block) of the last block it became (where a caller's cache mark on it goes). With
    ``thinking``, an assistant turn starts with its thinking blocks, unchanged."""
    out: list[dict[str, Any]] = []
    for m in messages:
        _turn(out, m, thinking)
        if positions is not None:
            last = out[-1]["content"]
            positions.append((len(out) - 1 + offset,
                              len(last) - 1 if isinstance(last, list) else 0))
    return out


def _turn(out: list[dict[str, Any]], m: Message, thinking: bool = False) -> None:
    """Add message ``m`` to the Anthropic turns ``out``."""
    if m.role == "assistant" and (m.tool_calls or (thinking and m.thinking)):
        # Thinking first, as the model wrote it (Anthropic checks each block's signature).
        blocks: list[dict[str, Any]] = [b.to_anthropic() for b in m.thinking] if thinking else []
        blocks += [{"type": "text", "text": m.content}] if m.content else []
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name,
                    "input": json.loads(c.arguments)} for c in m.tool_calls]
        out.append({"role": "assistant", "content": blocks})
    elif m.role == "tool":
        block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
        if out and out[-1]["role"] == "user" and _holds_results(out[-1]):
            out[-1]["content"].append(block)
        else:
            out.append({"role": "user", "content": [block]})
    elif m.role == "user" and out and _holds_results(out[-1]):
        out[-1]["content"] += _user_blocks(m)
    elif m.parts:
        out.append({"role": "user", "content": _user_blocks(m)})
    else:
        out.append({"role": m.role, "content": m.content})


def _user_blocks(m: Message) -> list[dict[str, Any]]:
    """A user turn as content blocks: its text, and its images as ``image`` blocks."""
    if not m.parts:
        return [{"type": "text", "text": m.content}]
    return [anthropic_image(p) if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
            for p in m.parts]


def anthropic_image(part: ImagePart) -> dict[str, Any]:
    """An image block: a URL Anthropic fetches, or the bytes (``detail`` has no equivalent:
    Claude sees every image at its resized full size, and it is counted so)."""
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": part.media_type,
                                        "data": part.data}}


def _holds_results(turn: dict[str, Any]) -> bool:
    content = turn.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def count_breakpoints(payload: dict[str, Any]) -> int:
    """How many ``cache_control`` markers a payload carries."""
    blocks: list[Any] = list(payload.get("tools") or []) + list(payload.get("system") or [])
    for msg in payload.get("messages") or []:
        if isinstance(msg.get("content"), list):
            blocks += msg["content"]
    return sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)


#: Forwarded to OpenAI as they are, when set and not dropped.
_OPENAI_AS_IS = ("top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
                 "logprobs", "top_logprobs", "verbosity", "store", "metadata",
                 "safety_identifier")


def openai_chat_body(call: ProviderCall) -> dict[str, Any]:
    """The chat-completions body of one call: one shape for the single call and the Batch API.

    What the model cannot honour was refused before the request was queued, or dropped with
    the caller's leave (models/domain/params.py); a fallback model that cannot honour it
    refuses here, before anything is sent.
    """
    req, model = call.request, call.model
    dropped = set(dropped_params(req, model))
    body: dict[str, Any] = {"model": model.api_name or model.name,
                            "messages": openai_messages(req),
                            "max_completion_tokens": req.max_tokens}
    if model.can("sampling") and "temperature" not in dropped:
        body["temperature"] = req.temperature
    if req.stop:
        body["stop"] = list(req.stop)
    tools = openai_tools(req)
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None and "tool_choice" not in dropped:
            c = req.tool_choice
            body["tool_choice"] = ({"type": "function", "function": {"name": c.name}}
                                   if c.mode == "function" else c.mode)
        if req.parallel_tool_calls is not None and "parallel_tool_calls" not in dropped:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format == "json" and "response_format" not in dropped:
        body["response_format"] = {"type": "json_object"}
    elif req.response_schema is not None and "response_format" not in dropped:
        schema: dict[str, Any] = {"name": req.response_schema.name,
                                  "schema": req.response_schema.schema_}
        if req.response_schema.description:
            schema["description"] = req.response_schema.description
        if req.response_schema.strict is not None:
            schema["strict"] = req.response_schema.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    for name in _OPENAI_AS_IS:
        value = getattr(req, name)
        if value is not None and name not in dropped:
            body[name] = value
    effort = openai_effort(req)
    if effort is not None and model.can("reasoning") and not dropped & {"reasoning_effort",
                                                                         "thinking_budget"}:
        body["reasoning_effort"] = effort
    if req.prediction is not None and "prediction" not in dropped:
        body["prediction"] = {"type": "content", "content": req.prediction.content}
    if req.service_tier is not None and "service_tier" not in dropped:
        body["service_tier"] = req.service_tier
    # The caller's own prompt-cache key wins: it knows which of its prompts share a prefix.
    key = req.prompt_cache_key or openai_cache_key(req, call.cache_scope)
    # OpenAI's own field: a vLLM / SGLang / TGI server caches prefixes by itself, and some
    # refuse fields they do not know.
    if key and call.model.provider != "openai_compatible":
        body["prompt_cache_key"] = key
    if req.user:
        body["user"] = req.user
    return body


def unsigned_tool_loop(request: ChatRequest) -> bool:
    """A tool loop whose last assistant turn came back without its thinking blocks (the chat
    door cannot carry them). Anthropic refuses such a turn with thinking on and advises
    turning thinking off for it: the loop then goes on without thinking, as it says."""
    last = next((m for m in reversed(request.messages) if m.role == "assistant"), None)
    return (last is not None and bool(last.tool_calls) and not last.thinking
            and request.messages[-1].role == "tool")


_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any", "function": "tool"}


def anthropic_message_params(call: ProviderCall) -> dict[str, Any]:
    """The messages params of one call, cache breakpoints included: one shape for the single
    call and the Message Batches API. ``temperature`` and ``top_p``, which the SDK no longer
    types, are moved into ``extra_body`` by the adapter."""
    req, model = call.request, call.model
    dropped = set(dropped_params(req, model))
    budget = thinking_budget(req) if model.can("reasoning") else None
    if dropped & {"reasoning_effort", "thinking_budget"} or unsigned_tool_loop(req):
        budget = None
    params: dict[str, Any] = anthropic_payload(req, model, call.cache_ttl,
                                               thinking=budget is not None)
    params.update(model=model.api_name or model.name, max_tokens=req.max_tokens)
    if budget is not None:
        # Thinking tokens are output tokens, within max_tokens; no temperature with thinking.
        params["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif req.top_p is not None and "top_p" not in dropped:
        params["top_p"] = req.top_p  # Claude takes one of temperature and top_p
    elif "temperature" not in dropped:
        params["temperature"] = min(req.temperature, 1.0)
    if "thinking" in params and req.top_p is not None and "top_p" not in dropped:
        params["top_p"] = req.top_p
    if req.top_k is not None and "top_k" not in dropped:
        params["top_k"] = req.top_k
    if req.stop:
        params["stop_sequences"] = list(req.stop)
    if req.static.tools:
        choice: dict[str, Any] | None = None
        if req.tool_choice is not None and "tool_choice" not in dropped:
            choice = {"type": _TOOL_CHOICE[req.tool_choice.mode]}
            if req.tool_choice.mode == "function":
                choice["name"] = req.tool_choice.name
        if req.parallel_tool_calls is False and (choice or {}).get("type") != "none":
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            params["tool_choice"] = choice
    if req.response_schema is not None and "response_format" not in dropped:
        params["output_config"] = {"format": {"type": "json_schema",
                                              "schema": req.response_schema.schema_}}
    user = (req.safety_identifier or (req.metadata or {}).get("user_id") or req.user)
    if user:
        params["metadata"] = {"user_id": user}
    if req.service_tier in ("auto", "default") and "service_tier" not in dropped:
        params["service_tier"] = "auto" if req.service_tier == "auto" else "standard_only"
    return params
