"""OpenAI chat-completions bodies to ChatRequest fields (``POST /v1/chat/completions``)."""

from __future__ import annotations

from typing import Any

from models.db.api_keys import KeyInfo
from models.domain.result import ChatResult
from queues.http.errors import Problem, openai_response
from queues.http.wire import openai_chat_render as render
from queues.http.wire.base import Parsed
from queues.http.wire.common import H_USER, bad, base_request

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


class OpenAIChat:
    """The chat-completions wire format."""

    name = "openai_chat"

    def parse(self, body: dict[str, Any], headers: Any, key: KeyInfo) -> Parsed:
        """ChatRequest fields for an OpenAI body (see :func:`to_request`)."""
        data, origin = to_request(body, headers, team=key.team, org=key.org, key_id=key.id,
                                  default_feature=key.feature)
        stream, include_usage = stream_mode(body)
        return Parsed(data, origin, stream, {"include_usage": include_usage})

    def render(self, result: ChatResult) -> dict[str, Any]:
        return render.completion_body(result)

    def encoder(self, request_id: str, model: str, parsed: Parsed) -> render.Chunks:
        return render.Chunks(request_id, model,
                             include_usage=bool(parsed.options.get("include_usage")))

    def error(self, problem: Problem) -> Any:
        return openai_response(problem)


def to_request(body: dict[str, Any], headers: Any, *, team: str, org: str, key_id: str,
               default_feature: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """ChatRequest fields for an OpenAI body, and where each field came from (its param name).

    Raises ValidationError naming the OpenAI parameter (or sluicegate header) at fault.
    """
    for name in body:
        if name in REFUSED and body[name] is not None:
            bad(name, REFUSED[name])
        if name not in HANDLED and name not in REFUSED:
            bad(name, f"unrecognized request argument supplied: {name}")
    _check_unsupported(body)
    if "model" not in body:
        bad("model", "you must provide a model parameter")
    system, messages = _messages(body.get("messages"))
    data, origin = base_request(headers, team=team, org=org, key_id=key_id, model=body["model"],
                                default_feature=default_feature)
    origin.update({"static": "messages", "messages": "messages", "tools": "tools",
                   "response_schema": "response_format"})
    data["messages"] = messages
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
    if "user" in data:  # x-sluice-user wins over the body's
        origin["user"] = H_USER
    elif body.get("user") is not None:
        data["user"], origin["user"] = body["user"], "user"
    return data, origin


def stream_mode(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to answer as server-sent events, and whether the stream ends with a usage
    chunk (``stream_options.include_usage``); a ValidationError names a malformed param."""
    stream, options = body.get("stream"), body.get("stream_options")
    if not (stream is None or isinstance(stream, bool)):  # JSON's 1 is not true here
        bad("stream", "stream must be true or false")
    if options is None:
        return bool(stream), False
    if not stream:
        bad("stream_options", "stream_options is only allowed when stream is true")
    if not isinstance(options, dict):
        bad("stream_options", "stream_options must be an object, like {\"include_usage\": true}")
    usage = options.get("include_usage")
    if not (usage is None or isinstance(usage, bool)):
        bad("stream_options", "stream_options.include_usage must be true or false")
    # Other options (include_obfuscation, ...) shape padding we never send: ignored.
    return True, bool(usage)


def _check_unsupported(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        bad("n", "only n=1 is supported: send one request per answer you want")
    if body.get("modalities") not in (None, ["text"]):
        bad("modalities", "only text output is supported (modalities=['text'])")
    if body.get("logprobs") and body.get("stream"):
        bad("logprobs", "logprobs are returned with whole answers only: drop stream or "
                         "logprobs")


def _tool_choice(raw: Any) -> dict[str, Any]:
    """OpenAI's tool_choice (none, auto, required, or a named function) as a ToolChoice."""
    if raw in ("none", "auto", "required"):
        return {"mode": raw}
    fn = raw.get("function") if isinstance(raw, dict) and raw.get("type") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        bad("tool_choice", "tool_choice must be 'none', 'auto', 'required' or "
                            "{'type': 'function', 'function': {'name': ...}}")
    return {"mode": "function", "name": fn["name"]}


def _prediction(raw: Any) -> str:
    content = raw.get("content") if isinstance(raw, dict) and raw.get("type") == "content" \
        else None
    if content is None:
        bad("prediction", "prediction must be {'type': 'content', 'content': ...}")
    return _text(content, "prediction")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                bad("messages", f"{where}: only text content parts are allowed here (images "
                                 "go in user messages)")
            parts.append(part["text"])
        return "\n".join(parts)
    bad("messages", f"{where}: content must be a string or an array of text parts")


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
            bad("messages", f"{where}.content[{j}]: {kind} parts are not supported: send "
                             "text and images")
        else:
            bad("messages", f"{where}.content[{j}] must be a text or image_url part")
    return {"parts": parts}


def _messages(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    """Leading system/developer turns become the cacheable system prompt; the rest stay turns."""
    if not isinstance(raw, list) or not raw:
        bad("messages", "messages must be a non-empty array")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            bad("messages", f"{where} must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            if turns:
                bad("messages", f"{where}: system messages must come before the conversation "
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
            bad("messages", f"{where}: role must be system, developer, user, assistant or tool")
    if not turns:
        bad("messages", "messages must hold at least one user turn")
    return "\n\n".join(system), turns


def _history_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    """An assistant turn's ``tool_calls`` as ToolCall fields (checked in full by ChatRequest)."""
    if not isinstance(raw, list):
        bad("messages", f"{where}.tool_calls must be an array")
    out = []
    for i, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(call, dict) and call.get("type", "function") == "function"
                and isinstance(fn, dict)):
            bad("messages", f"{where}.tool_calls[{i}] must be {{'id': ..., 'type': "
                             "'function', 'function': {'name': ..., 'arguments': ...}}")
        out.append({"id": call.get("id"), "name": fn.get("name"),
                    "arguments": fn.get("arguments", "{}")})
    return out


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        bad("tools", "tools must be an array")
    out = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)):
            bad("tools", f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
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
            bad("response_format", "response_format json_schema needs json_schema: "
                                    "{'name': ..., 'schema': {...}, 'strict': ...}")
        schema = {k: spec[k] for k in ("name", "description", "schema", "strict")
                  if spec.get(k) is not None}
        return "json_schema", schema
    bad("response_format", "response_format.type must be 'text', 'json_object' or "
                            "'json_schema'")
