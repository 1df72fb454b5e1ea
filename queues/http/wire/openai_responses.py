"""OpenAI Responses bodies to ChatRequest fields (``POST /v1/responses``).

``input`` items become ChatRequest turns (``openai_responses_items``); ``instructions`` and
leading system messages the cacheable system prompt; ``reasoning``, ``text.format`` and
``include`` the provider-neutral fields, with ``openai_responses`` set so that an OpenAI model
is called through its Responses API. ``store`` and ``previous_response_id`` are the door's
(``queues/http/responses_state.py``): they never reach a worker.
"""

from __future__ import annotations

from typing import Any

from models.db.api_keys import KeyInfo
from models.domain.result import ChatResult
from queues.http.errors import Problem, openai_response
from queues.http.wire import openai_responses_items as items
from queues.http.wire import openai_responses_render as render
from queues.http.wire.base import Parsed
from queues.http.wire.common import H_USER, bad, base_request

#: Copied onto the request as they are (ChatRequest checks their values).
AS_IS = ("temperature", "top_p", "parallel_tool_calls", "metadata", "prompt_cache_key",
         "safety_identifier", "service_tier")
#: ``include`` values we honour: encrypted reasoning, passed through opaque.
INCLUDES = frozenset({"reasoning.encrypted_content"})
HANDLED = frozenset({"model", "input", "instructions", "tools", "tool_choice",
                     "max_output_tokens", "reasoning", "text", "include", "store",
                     "previous_response_id", "stream", "stream_options", "truncation", "user",
                     "top_logprobs", *AS_IS})
#: Parameters no model behind sluicegate takes: a 400 that says what to do instead.
REFUSED = {"background": "background is not supported: send the x-sluice-lane: async header "
                         "and poll /v1/jobs/{id}",
           "conversation": "conversation objects are not supported: chain with "
                           "previous_response_id",
           "prompt": "prompt templates are not supported: send the input itself",
           "max_tool_calls": "max_tool_calls is not supported: the caller runs the tools",
           "prompt_cache_retention": "prompt_cache_retention is not supported: sluicegate "
                                     "sets the provider's prompt caching itself"}


class OpenAIResponses:
    """The Responses wire format."""

    name = "openai_responses"

    def parse(self, body: dict[str, Any], headers: Any, key: KeyInfo) -> Parsed:
        """ChatRequest fields for a Responses body; a ValidationError names its param."""
        data, origin, echo = to_request(body, headers, key)
        stream = body.get("stream")
        if not (stream is None or isinstance(stream, bool)):
            bad("stream", "stream must be true or false")
        if body.get("stream_options") is not None and not stream:
            bad("stream_options", "stream_options is only allowed when stream is true")
        return Parsed(data, origin, bool(stream),
                      {"echo": echo, "input": body["input"],
                       "instructions": body.get("instructions") or ""})

    def render(self, result: ChatResult) -> dict[str, Any]:
        return render.response_body(result, {})

    def encoder(self, request_id: str, model: str, parsed: Parsed) -> render.Events:
        return render.Events(request_id, model, parsed.options.get("echo", {}),
                             keep=parsed.options.get("keep"))

    def error(self, problem: Problem) -> Any:
        return openai_response(problem)


def to_request(body: dict[str, Any], headers: Any, key: KeyInfo
               ) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """ChatRequest fields, where each came from, and what the response echoes back."""
    for name in body:
        if name in REFUSED and body[name] is not None:
            bad(name, REFUSED[name])
        if name not in HANDLED and name not in REFUSED:
            bad(name, f"Unknown parameter: '{name}'.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        bad("model", "Missing required parameter: 'model'.")
    data, origin = base_request(headers, team=key.team, org=key.org, key_id=key.id,
                                model=body["model"], default_feature=key.feature)
    origin.update({"static": "instructions", "messages": "input", "tools": "tools",
                   "max_tokens": "max_output_tokens", "response_schema": "text.format",
                   "response_format": "text.format", "reasoning_effort": "reasoning.effort",
                   "openai_responses": "include"})
    system, turns = items.input_turns(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        bad("instructions", "instructions must be a string")
    prompt = "\n\n".join(p for p in (instructions or "", *system) if p)
    static: dict[str, Any] = {"system": prompt} if prompt else {}
    if body.get("tools"):
        static["tools"] = items.tool_defs(body["tools"])
    if static:
        data["static"] = static
    data["messages"] = items.close(turns)
    if body.get("max_output_tokens") is not None:
        data["max_tokens"] = body["max_output_tokens"]
    for name in AS_IS:
        if body.get(name) is not None:
            data[name] = body[name]
    if body.get("tool_choice") is not None:
        data["tool_choice"] = items.tool_choice(body["tool_choice"])
    options = _options(body, data)
    _text(body.get("text"), data)
    if "user" in data:  # x-sluice-user wins over the body's
        origin["user"] = H_USER
    elif body.get("user") is not None:
        data["user"], origin["user"] = body["user"], "user"
    return data, origin, _echo(body, options)


def _options(body: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``reasoning``, ``include``, ``truncation`` and ``top_logprobs``."""
    options: dict[str, Any] = {}
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict) or set(reasoning) - {"effort", "summary",
                                                               "generate_summary"}:
            bad("reasoning", "reasoning must be {'effort': ..., 'summary': ...}")
        if reasoning.get("effort") is not None:
            data["reasoning_effort"] = reasoning["effort"]
        summary = reasoning.get("summary") or reasoning.get("generate_summary")
        if summary is not None:
            options["reasoning_summary"] = summary
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
            bad("include", "include must be an array of strings")
        unknown = sorted(set(include) - INCLUDES)
        if unknown:
            bad("include", f"include: {unknown} are not supported (only "
                           f"{sorted(INCLUDES)}: no hosted tools or logprobs here)")
        options["include"] = sorted(set(include))
    if body.get("truncation") is not None:
        options["truncation"] = body["truncation"]
    if body.get("top_logprobs") not in (None, 0):
        bad("top_logprobs", "top_logprobs are not supported on this door: use "
                            "/v1/chat/completions with logprobs")
    data["openai_responses"] = options
    return options


def _text(raw: Any, data: dict[str, Any]) -> None:
    """``text.format`` (text, json_object, json_schema) and ``text.verbosity``."""
    if raw is None:
        return
    if not isinstance(raw, dict) or set(raw) - {"format", "verbosity"}:
        bad("text", "text must be {'format': {...}, 'verbosity': ...}")
    if raw.get("verbosity") is not None:
        data["verbosity"] = raw["verbosity"]
    fmt = raw.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return
    if kind == "json_object":
        data["response_format"] = "json"
    elif kind == "json_schema" and isinstance(fmt.get("name"), str):
        data["response_format"] = "json_schema"
        data["response_schema"] = {k: fmt[k] for k in ("name", "description", "schema",
                                                       "strict") if fmt.get(k) is not None}
    else:
        bad("text.format", "text.format must be {'type': 'text'}, {'type': 'json_object'} "
                           "or {'type': 'json_schema', 'name': ..., 'schema': {...}}")


def _store(value: Any) -> bool:
    if not isinstance(value, bool):
        bad("store", "store must be true or false")
    return value


def _echo(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The request fields a Response object repeats, as OpenAI fills them in."""
    reasoning = body.get("reasoning") or {}
    return {"instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"),
                          "summary": options.get("reasoning_summary")},
            "store": False, "store_asked": _store(body.get("store", True)),
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "text": {"format": {"type": "text"}, **(body.get("text") or {})},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "truncation": body.get("truncation", "disabled"),
            "user": body.get("user"), "prompt_cache_key": body.get("prompt_cache_key"),
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier") or "default",
            "include": options.get("include", [])}
