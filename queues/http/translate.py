"""OpenAI chat-completions bodies to ChatRequest fields, and ChatResults back to completions."""

from __future__ import annotations

import math
import time
from typing import Any, NoReturn

from models.domain.errors import ValidationError
from models.domain.request import MAX_TIMEOUT_S, openai_tool_calls
from models.domain.result import ChatResult

#: Body parameters copied onto the request as they are (ChatRequest checks their values;
#: models/domain/params.py decides, per routed model, what each provider gets).
AS_IS = ("top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
         "top_logprobs", "parallel_tool_calls", "reasoning_effort", "verbosity",
         "service_tier", "metadata", "store", "safety_identifier", "prompt_cache_key")
HANDLED = frozenset({"model", "messages", "tools", "tool_choice", "max_tokens",
                     "max_completion_tokens", "temperature", "stop", "response_format", "user",
                     "stream", "stream_options", "n", "modalities", "prediction", *AS_IS})
#: Parameters no model behind sluicegate takes: always a 400 that says so.
REFUSED = {"audio": "audio output is not supported: ask for text (leave out audio)",
           "functions": "functions is deprecated: send tools instead",
           "function_call": "function_call is deprecated: send tool_choice instead",
           "web_search_options": "no model behind sluicegate searches the web",
           "moderation": "moderation is not supported: moderate before or after the call",
           "prompt_cache_options": "prompt_cache_options is not supported: sluicegate sets "
                                   "the provider's prompt caching itself",
           "prompt_cache_retention": "prompt_cache_retention is not supported: sluicegate "
                                     "sets the provider's prompt caching itself"}
#: Request headers carrying sluicegate attribution and options.
H_FEATURE, H_USER, H_LANE = "x-sluice-feature", "x-sluice-user", "x-sluice-lane"
H_REQUEST_ID, H_CACHE, H_BATCH = "x-sluice-request-id", "x-sluice-cache-mode", "x-sluice-batch"
H_TIMEOUT = "x-sluice-timeout"
#: Opt-in: drop what the routed model cannot honour instead of refusing (LiteLLM's
#: drop_params); the answer's x-sluice-dropped-params header lists what was dropped.
H_DROP, H_DROPPED = "x-sluice-drop-params", "x-sluice-dropped-params"
#: Timeouts the official SDKs announce on each request (openai: read timeout; anthropic: the
#: whole call). A request still queued when its client has given up is not worth running.
SDK_TIMEOUT_HEADERS = ("x-stainless-timeout", "x-stainless-read-timeout")
_FINISH = {"stop", "length", "tool_calls", "content_filter"}


def to_request(body: dict[str, Any], headers: Any, *, team: str, org: str,
               key_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """ChatRequest fields for an OpenAI body, and where each field came from (its param name).

    Raises ValidationError naming the OpenAI parameter (or sluicegate header) at fault.
    """
    origin: dict[str, str] = {"feature": H_FEATURE, "lane": H_LANE, "request_id": H_REQUEST_ID,
                              "static": "messages", "messages": "messages", "tools": "tools",
                              "response_schema": "response_format", "drop_params": H_DROP}
    for name in body:
        if name in REFUSED and body[name] is not None:
            _bad(name, REFUSED[name])
        if name not in HANDLED and name not in REFUSED:
            _bad(name, f"unrecognized request argument supplied: {name}")
    _check_unsupported(body)
    if "model" not in body:
        _bad("model", "you must provide a model parameter")
    system, messages = _messages(body.get("messages"))
    data: dict[str, Any] = {"team": team, "org": org, "model": body["model"],
                            "messages": messages,
                            "feature": headers.get(H_FEATURE) or "default",
                            "lane": headers.get(H_LANE) or "interactive",
                            "tags": {"key": key_id}}
    static: dict[str, Any] = {}
    if system:
        static["system"] = system
    if body.get("tools") is not None:
        static["tools"] = _tools(body["tools"])
    if static:
        data["static"] = static
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            data["max_tokens"], origin["max_tokens"] = body[name], name
            break
    if body.get("temperature") is not None:
        data["temperature"] = body["temperature"]
    if body.get("stop") is not None:
        data["stop"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    if body.get("response_format") is not None:
        data["response_format"], schema = _response_format(body["response_format"])
        if schema is not None:
            data["response_schema"] = schema
    for name in AS_IS:
        if body.get(name) is not None:
            data[name] = body[name]
    if body.get("tool_choice") is not None:
        data["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("prediction") is not None:
        data["prediction"] = {"content": _prediction(body["prediction"])}
    if headers.get(H_DROP) is not None:
        data["drop_params"] = _flag(headers[H_DROP], H_DROP)
    user = headers.get(H_USER) or body.get("user")
    if user is not None:
        data["user"], origin["user"] = user, H_USER if headers.get(H_USER) else "user"
    if headers.get(H_REQUEST_ID):
        data["request_id"] = headers[H_REQUEST_ID]
    if headers.get(H_CACHE):
        data["cache"] = {"mode": headers[H_CACHE]}
        origin["cache"] = H_CACHE
    if headers.get(H_BATCH):
        data["tags"]["batch"] = headers[H_BATCH].strip().lower()
    timeout = _caller_timeout(headers, sdk=data["lane"] != "async")
    if timeout is not None:
        data["timeout_s"], origin["timeout_s"] = timeout, H_TIMEOUT
    return data, origin


def _caller_timeout(headers: Any, *, sdk: bool) -> float | None:
    """Seconds the caller will wait: ``x-sluice-timeout``, else (``sdk``: an interactive
    request, whose HTTP call waits for the answer) what its SDK announced. An async request's
    HTTP call ends at once with a job id: its SDK timeout says nothing about the job."""
    given = headers.get(H_TIMEOUT)
    if given is not None:
        try:
            value = float(given)
        except ValueError:
            value = math.nan
        if not 0 < value <= MAX_TIMEOUT_S:  # also refuses NaN
            _bad(H_TIMEOUT, f"{H_TIMEOUT} must be a number of seconds in "
                 f"(0, {MAX_TIMEOUT_S:g}], not {given[:40]!r}")
        return value
    for name in SDK_TIMEOUT_HEADERS if sdk else ():
        try:
            value = float(headers.get(name) or "nan")
        except ValueError:
            continue  # an SDK's hint we cannot read is no reason to refuse the request
        if 0 < value <= MAX_TIMEOUT_S:
            return value
    return None


def param_for(field: str, origin: dict[str, str]) -> str:
    """The OpenAI parameter (or header) a ChatRequest validation error is about."""
    head = field.split(".", 1)[0]
    if field.startswith("static.tools"):
        return "tools"
    return origin.get(head, head)


def _bad(param: str, message: str) -> NoReturn:
    raise ValidationError(message, field=param)


def stream_mode(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to answer as server-sent events, and whether the stream ends with a usage
    chunk (``stream_options.include_usage``); a ValidationError names a malformed param."""
    stream, options = body.get("stream"), body.get("stream_options")
    if not (stream is None or isinstance(stream, bool)):  # JSON's 1 is not true here
        _bad("stream", "stream must be true or false")
    if options is None:
        return bool(stream), False
    if not stream:
        _bad("stream_options", "stream_options is only allowed when stream is true")
    if not isinstance(options, dict):
        _bad("stream_options", "stream_options must be an object, like {\"include_usage\": true}")
    usage = options.get("include_usage")
    if not (usage is None or isinstance(usage, bool)):
        _bad("stream_options", "stream_options.include_usage must be true or false")
    # Other options (include_obfuscation, ...) shape padding we never send: ignored.
    return True, bool(usage)


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        _bad("n", "only n=1 is supported: send one request per answer you want")
    if body.get("modalities") not in (None, ["text"]):
        _bad("modalities", "only text output is supported (modalities=['text'])")
    if body.get("logprobs") and body.get("stream"):
        _bad("logprobs", "logprobs are returned with whole answers only: drop stream or "
                         "logprobs")


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        _bad(name, f"{name} must be true or false")
    return text in ("true", "1", "yes")


def _tool_choice(raw: Any) -> dict[str, Any]:
    """OpenAI's tool_choice (none, auto, required, or a named function) as a ToolChoice."""
    if raw in ("none", "auto", "required"):
        return {"mode": raw}
    fn = raw.get("function") if isinstance(raw, dict) and raw.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        _bad("tool_choice", "tool_choice must be 'none', 'auto', 'required' or "
                            "{'type': 'function', 'function': {'name': ...}}")
    return {"mode": "function", "name": fn["name"]}


def _prediction(raw: Any) -> str:
    content = raw.get("content") if isinstance(raw, dict) and raw.get("type") == "content" \
        else None
    if content is None:
        _bad("prediction", "prediction must be {'type': 'content', 'content': ...}")
    return _text(content, "prediction")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                _bad("messages", f"{where}: only text content parts are allowed here (images "
                                 "go in user messages)")
            parts.append(part["text"])
        return "\n".join(parts)
    _bad("messages", f"{where}: content must be a string or an array of text parts")


def _user_content(content: Any, where: str) -> dict[str, Any]:
    """A user turn's content: text, or text and image parts in order."""
    if not isinstance(content, list) or all(isinstance(p, dict) and p.get("type") == "text"
                                            for p in content):
        return {"content": _text(content, where)}
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            image = part["image_url"]
            parts.append({"type": "image", "url": image.get("url"),
                          "detail": image.get("detail") or "auto"})
        elif kind in ("input_audio", "file"):
            _bad("messages", f"{where}.content[{j}]: {kind} parts are not supported: send "
                             "text and images")
        else:
            _bad("messages", f"{where}.content[{j}] must be a text or image_url part")
    return {"parts": parts}


def _messages(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    """Leading system/developer turns become the cacheable system prompt; the rest stay turns."""
    if not isinstance(raw, list) or not raw:
        _bad("messages", "messages must be a non-empty array")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            _bad("messages", f"{where} must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            if turns:
                _bad("messages", f"{where}: system messages must come before the conversation "
                                 "(sluicegate sends them first, as the cacheable prefix)")
            system.append(_text(msg.get("content"), where))
        elif role == "user":
            turns.append({"role": role, **_user_content(msg.get("content"), where)})
        elif role == "assistant":
            content = msg.get("content")
            turn: dict[str, Any] = {"role": role,
                                    "content": "" if content is None else _text(content, where)}
            if msg.get("tool_calls"):
                turn["tool_calls"] = _history_calls(msg["tool_calls"], where)
            turns.append(turn)
        elif role == "tool":
            turns.append({"role": role, "content": _text(msg.get("content") or "", where),
                          "tool_call_id": msg.get("tool_call_id")})
        else:
            _bad("messages", f"{where}: role must be system, developer, user, assistant or tool")
    if not turns:
        _bad("messages", "messages must hold at least one user turn")
    return "\n\n".join(system), turns


def _history_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    """An assistant turn's ``tool_calls`` as ToolCall fields (checked in full by ChatRequest)."""
    if not isinstance(raw, list):
        _bad("messages", f"{where}.tool_calls must be an array")
    out = []
    for i, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(call, dict) and call.get("type", "function") == "function"
                and isinstance(fn, dict)):
            _bad("messages", f"{where}.tool_calls[{i}] must be {{'id': ..., 'type': "
                             "'function', 'function': {'name': ..., 'arguments': ...}}")
        out.append({"id": call.get("id"), "name": fn.get("name"),
                    "arguments": fn.get("arguments", "{}")})
    return out


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        _bad("tools", "tools must be an array")
    out = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)):
            _bad("tools", f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        entry: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description") is not None:
            entry["description"] = fn["description"]
        if fn.get("parameters") is not None:
            entry["parameters"] = fn["parameters"]
        out.append(entry)
    return out


def _response_format(raw: Any) -> tuple[str, dict[str, Any] | None]:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return "text", None
    if kind == "json_object":
        return "json", None
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            _bad("response_format", "response_format json_schema needs json_schema: "
                                    "{'name': ..., 'schema': {...}, 'strict': ...}")
        schema = {k: spec[k] for k in ("name", "description", "schema", "strict")
                  if spec.get(k) is not None}
        return "json_schema", schema
    _bad("response_format", "response_format.type must be 'text', 'json_object' or "
                            "'json_schema'")


def completion_body(result: ChatResult, *, created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` object for ``result`` (usage counts cached prompt tokens in)."""
    u = result.usage
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.tool_calls:
        # OpenAI's shape: content is null when the model only called tools.
        message["content"] = result.text or None
        message["tool_calls"] = openai_tool_calls(result.tool_calls)
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": result.model,
        "choices": [{"index": 0, "logprobs": None if result.logprobs is None else {
                         "content": list(result.logprobs), "refusal": None},
                     "finish_reason": result.finish_reason if result.finish_reason in _FINISH
                     else "stop",
                     "message": message}],
        "usage": {
            # OpenAI's convention: prompt_tokens INCLUDES the cached ones.
            "prompt_tokens": u.input_total, "completion_tokens": u.output,
            "total_tokens": u.input_total + u.output,
            "prompt_tokens_details": {"cached_tokens": u.cache_read},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning},
        },
        "system_fingerprint": None,
    }


def sluice_headers(result: ChatResult) -> dict[str, str]:
    """What the levers did, in ``x-sluice-*`` response headers."""
    r = result.route
    headers = {"x-sluice-request-id": result.request_id,
               "x-sluice-cost": format(result.cost, "f"),
               "x-sluice-baseline-cost": format(result.baseline_cost, "f"),
               "x-sluice-route": f"tier={r.tier}; model={result.model}; queue={r.queue}",
               "x-sluice-cache": "hit" if result.cache_hit else "miss"}
    if r.dropped:
        headers[H_DROPPED] = ", ".join(r.dropped)
    t = result.timings
    # The W3C Server-Timing header: browsers' dev tools and tracing proxies show it, so a
    # slow answer says whether it waited in the queue or at the provider.
    headers["server-timing"] = (f"queue;dur={t.queued_ms:.1f}, provider;dur={t.provider_ms:.1f}, "
                                f"total;dur={t.total_ms:.1f}")
    return headers
