"""OpenAI chat-completions bodies to ChatRequest fields (``POST /v1/chat/completions``)."""

from __future__ import annotations

from typing import Any

from models.db.api_keys import KeyInfo
from models.domain.result import ChatResult
from queues.http.errors import Problem, openai_response
from queues.http.wire import openai_chat_render as render
from queues.http.wire.base import Parsed
from queues.http.wire.common import H_USER, bad, base_request

#: Accepted and ignored: they tune sampling or bookkeeping we do not model, not the answer's shape.
IGNORED = frozenset({"top_p", "presence_penalty", "frequency_penalty", "seed", "logit_bias",
                     "parallel_tool_calls", "store", "metadata", "service_tier",
                     "prompt_cache_key", "safety_identifier"})
HANDLED = frozenset({"model", "messages", "tools", "tool_choice", "max_tokens",
                     "max_completion_tokens", "temperature", "stop", "response_format", "user",
                     "stream", "stream_options", "n", "logprobs", "modalities"})


class OpenAIChat:
    """The chat-completions wire format."""

    name = "openai_chat"

    def parse(self, body: dict[str, Any], headers: Any, key: KeyInfo) -> Parsed:
        """ChatRequest fields for an OpenAI body (see :func:`to_request`)."""
        data, origin = to_request(body, headers, team=key.team, org=key.org, key_id=key.id,
                                  default_feature=getattr(key, "feature", None))
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
        if name not in HANDLED and name not in IGNORED:
            bad(name, f"unrecognized request argument supplied: {name}")
    _check_unsupported(body)
    if "model" not in body:
        bad("model", "you must provide a model parameter")
    system, messages = _messages(body.get("messages"))
    data, origin = base_request(headers, team=team, org=org, key_id=key_id, model=body["model"],
                                default_feature=default_feature)
    origin.update({"static": "messages", "messages": "messages", "tools": "tools"})
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
        data["response_format"] = _response_format(body["response_format"])
    if "user" not in data and body.get("user") is not None:
        data["user"], origin["user"] = body["user"], "user"
    elif "user" in data:
        origin["user"] = H_USER
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
        bad("n", "only n=1 is supported")
    if body.get("logprobs"):
        bad("logprobs", "logprobs are not supported")
    if body.get("modalities") not in (None, ["text"]):
        bad("modalities", "only text output is supported")
    if body.get("tool_choice") not in (None, "auto"):
        bad("tool_choice", "only tool_choice='auto' is supported")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                bad("messages", f"{where}: only text content parts are supported")
            parts.append(part["text"])
        return "\n".join(parts)
    bad("messages", f"{where}: content must be a string or an array of text parts")


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
            turns.append({"role": role, "content": _text(msg.get("content"), where)})
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


def _response_format(raw: Any) -> str:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return "text"
    if kind == "json_object":
        return "json"
    bad("response_format", "response_format.type must be 'text' or 'json_object'")
