"""OpenAI chat-completions wire format: ``POST /v1/chat/completions``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text
from workers.providers.standin.caching import CacheUsage, openai_cache
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.prompt import openai_prompt
from workers.providers.standin.options import (OPENAI_PARAMS, check_range, choose_call,
                                               fit, json_text, logprobs_of,
                                               reasoning_tokens, unknown)
from workers.providers.standin.replies import ToolUse, make_reply, next_tool
from workers.providers.standin.state import StandInState


async def chat_completions(request: Request) -> Response:
    """Answer a chat-completions call the way api.openai.com would, minus the model."""
    return await serve_call(request, "openai", bearer_key, answer)


def bearer_key(request: Request) -> str:
    """The bearer token; 401 in OpenAI's shape when there is none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestInvalid("You didn't provide an API key. You need to provide your API key in "
                             "an Authorization header using Bearer auth.", status=401)
    return token.strip()


def answer(state: StandInState, body: dict[str, Any], spec: ModelSpec, api_key: str) -> Answer:
    """Validate the body, account for prompt caching and build the ``chat.completion``."""
    unknown(body, OPENAI_PARAMS)
    if body.get("stream") not in (None, True, False):
        raise RequestInvalid("stream must be a boolean", param="stream")
    if body.get("n") not in (None, 1):
        raise RequestInvalid("the stand-in answers with one choice only: n must be 1", param="n")
    max_tokens = _max_tokens(body)
    _sampling(body, spec)
    stop = _stop(body.get("stop"))
    prompt = openai_prompt(body, spec.image_rule)
    # Real OpenAI routes by prefix hash and prompt_cache_key within an organization.
    scope = f"{api_key}\x00{spec.name}\x00{body.get('prompt_cache_key') or ''}"
    cached = openai_cache(prompt, state.openai_cache, scope, spec.min_cacheable_tokens,
                          state.config.openai_cache_ttl_s)
    limit = max_tokens if max_tokens is not None else spec.max_output
    reasoning = reasoning_tokens(spec, body.get("reasoning_effort"), limit)
    seed = f"{spec.name}|{prompt.digest}|{body.get('seed')}|{body.get('reasoning_effort')}"
    reply = make_reply(seed, prompt.last_user, limit - reasoning, stop)
    text, out_tokens, clipped = fit(_formatted(body.get("response_format"), seed, reply.text),
                                    limit - reasoning)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None,
                               "annotations": []}
    finish = "length" if reply.finish == "length" or clipped or reasoning == limit else "stop"
    # After a tool's result the model answers in text (else a loop would never end).
    tools = [str((t.get("function") or {}).get("name")) for t in body.get("tools") or ()]
    answered = body["messages"][-1].get("role") == "tool"
    ask = prompt.last_user
    if answered:  # a prompt that asks for several tools gets them one turn after another
        called = {str((c.get("function") or {}).get("name")) for m in body["messages"]
                  for c in m.get("tool_calls") or ()}
        more = next_tool(prompt.last_user, tools, called)
        if more is not None:
            answered, ask = False, f"use tool {more}"
    call = choose_call(_choice(body.get("tool_choice")), ask, tools, answered=answered)
    if call is not None:
        call = _filled(call, body.get("tools") or (), seed)
    if call is not None:
        message["content"], finish, out_tokens = None, "tool_calls", call.tokens
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}]
    logprobs = None
    if body.get("logprobs"):
        logprobs = {"content": logprobs_of(message["content"] or "",
                                           int(body.get("top_logprobs") or 0)),
                    "refusal": None}
    completion = out_tokens + reasoning
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt.total,  # includes cached_tokens, as OpenAI's does
            "completion_tokens": completion,  # includes reasoning_tokens, as OpenAI's does
            "total_tokens": prompt.total + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": body.get("service_tier") or "default",
        "system_fingerprint": "fp_standin",
    }
    return Answer(payload, prompt.total, completion, CacheUsage(read=cached))


def _filled(call: ToolUse, tools: Any, seed: str) -> ToolUse:
    """A call to a tool whose schema requires parameters fills them in, as a model would (an
    agent framework validates them before it runs the tool); else the ask, as before."""
    fn = next((t.get("function") or {} for t in tools
               if (t.get("function") or {}).get("name") == call.name), {})
    schema = fn.get("parameters") or {}
    if not schema.get("required"):
        return call
    arguments = json_text(f"{seed}|{call.name}", schema)
    return ToolUse(name=call.name, arguments=arguments, tokens=count_text(arguments))


def _sampling(body: dict[str, Any], spec: ModelSpec) -> None:
    """Ranges as OpenAI checks them; a reasoning model takes no sampling knobs at all."""
    check_range(body, "temperature", 0, 2)
    check_range(body, "top_p", 0, 1)
    check_range(body, "presence_penalty", -2, 2)
    check_range(body, "frequency_penalty", -2, 2)
    sampling = {"top_p": "sampling", "presence_penalty": "penalties",
                "frequency_penalty": "penalties", "logit_bias": "penalties",
                "logprobs": "logprobs", "top_logprobs": "logprobs",
                "verbosity": "verbosity", "prediction": "prediction"}
    for name, capability in sampling.items():
        if body.get(name) is not None and not spec.can(capability):
            raise RequestInvalid(f"Unsupported parameter: '{name}' is not supported with this "
                                 "model.", param=name)
    if body.get("temperature") not in (None, 1) and not spec.can("sampling"):
        raise RequestInvalid("Unsupported value: 'temperature' does not support "
                             f"{body['temperature']} with this model. Only the default (1) "
                             "value is supported.", param="temperature")
    if body.get("service_tier") not in (None, "auto", "default", "flex", "scale", "priority"):
        raise RequestInvalid("service_tier: unknown tier", param="service_tier")
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise RequestInvalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed "
                             "when 'tools' are specified.", param="tool_choice")


def _choice(raw: Any) -> Any:
    """``tool_choice`` as a mode or a tool name."""
    if isinstance(raw, dict):
        fn = raw.get("function") if raw.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestInvalid("tool_choice must be none, auto, required or "
                                 "{'type': 'function', 'function': {'name': ...}}",
                                 param="tool_choice")
        return fn["name"]
    if raw not in (None, "none", "auto", "required"):
        raise RequestInvalid(f"tool_choice: {raw!r} is not a valid choice", param="tool_choice")
    return raw


def _formatted(fmt: Any, seed: str, text: str) -> str:
    """The answer in the asked format: JSON for json_object, the schema's shape for
    json_schema."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return text
    if fmt["type"] == "json_object":
        return json_text(seed, {"type": "object", "properties": {"answer": {"type": "string"}}})
    if fmt["type"] == "json_schema" and isinstance(fmt.get("json_schema"), dict) \
            and isinstance(fmt["json_schema"].get("name"), str):
        return json_text(seed, fmt["json_schema"].get("schema"))
    raise RequestInvalid("response_format: type must be text, json_object or json_schema "
                         "(with json_schema.name)", param="response_format")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestInvalid(f"{field} must be a positive integer", param=field)
        return value
    return None


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return value
    raise RequestInvalid("stop must be a string or an array of at most 4 strings", param="stop")
