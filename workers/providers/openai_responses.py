"""OpenAI's Responses API, for requests from the Responses door routed to an OpenAI model.

The body is the chat-completions body of the same call (``openai_chat_body``: one place
decides what the model gets) in the Responses shape, with each assistant turn's reasoning
items passed back before it. ``store`` is false upstream (sluicegate keeps responses itself,
by the privacy settings), so a reasoning model is always asked for its encrypted reasoning:
that is what lets a reasoning item round-trip without OpenAI keeping it. Usage is normalized
exactly as chat completions' (``input_tokens`` includes cached tokens).
"""

from __future__ import annotations

import json
from typing import Any

from models.domain.errors import ProviderRetryable
from models.domain.request import ChatRequest, Message, ToolCall
from models.domain.usage import from_openai_responses
from workers.providers.base import ProviderCall, ProviderReply, TextSink, sdk_options
from workers.providers.errors import map_sdk_error
from workers.providers.shaping import openai_chat_body

#: Chat-completions fields that keep their name in the Responses API.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "metadata",
         "prompt_cache_key", "safety_identifier", "service_tier", "user")
ENCRYPTED = "reasoning.encrypted_content"


def responses_body(call: ProviderCall) -> dict[str, Any]:
    """The ``responses.create`` params of one call."""
    chat, req = openai_chat_body(call), call.request
    body: dict[str, Any] = {k: chat[k] for k in _SAME if k in chat}
    body["store"] = False
    body["max_output_tokens"] = chat["max_completion_tokens"]
    messages = chat["messages"]
    if messages and messages[0]["role"] == "system":
        body["instructions"], messages = messages[0]["content"], messages[1:]
    turns = (*req.static.few_shot, *req.messages)
    body["input"] = [item for m, sent in zip(turns, messages) for item in _items(m, sent)]
    if chat.get("tools"):
        body["tools"] = [{"type": "function", "strict": False, **t["function"]}
                         for t in chat["tools"]]
    choice = chat.get("tool_choice")
    if choice is not None:
        body["tool_choice"] = choice if isinstance(choice, str) else \
            {"type": "function", "name": choice["function"]["name"]}
    _text_and_reasoning(chat, req, body, reasons=call.model.can("reasoning"))
    return body


def _text_and_reasoning(chat: dict[str, Any], req: ChatRequest, body: dict[str, Any], *,
                        reasons: bool) -> None:
    text: dict[str, Any] = {}
    fmt = chat.get("response_format")
    if fmt is not None:
        text["format"] = fmt if fmt["type"] != "json_schema" else \
            {"type": "json_schema", **fmt["json_schema"]}
    if chat.get("verbosity") is not None:
        text["verbosity"] = chat["verbosity"]
    if text:
        body["text"] = text
    options = req.openai_responses
    reasoning: dict[str, Any] = {}
    if chat.get("reasoning_effort") is not None:
        reasoning["effort"] = chat["reasoning_effort"]
    if options is not None and options.reasoning_summary is not None:
        reasoning["summary"] = options.reasoning_summary
    if reasoning:
        body["reasoning"] = reasoning
    include = set(options.include if options is not None else ())
    # A model that does not reason has no reasoning to encrypt (OpenAI refuses the ask).
    include.discard(ENCRYPTED)
    if reasons:
        include.add(ENCRYPTED)
    if include:
        body["include"] = sorted(include)
    if options is not None and options.truncation is not None:
        body["truncation"] = options.truncation


def _items(m: Message, sent: dict[str, Any]) -> list[dict[str, Any]]:
    """One turn (and the chat-completions message made of it) as Responses input items."""
    if m.role == "tool":
        return [{"type": "function_call_output", "call_id": m.tool_call_id,
                 "output": m.content}]
    if m.role == "user":
        content = sent["content"]
        if isinstance(content, list):
            content = [{"type": "input_text", "text": p["text"]} if p["type"] == "text" else
                       {"type": "input_image", "image_url": p["image_url"]["url"],
                        "detail": p["image_url"].get("detail") or "auto"} for p in content]
        return [{"role": "user", "content": content}]
    # Without OpenAI's store, a reasoning item is read from its encrypted content only.
    out = [_reasoning_input(r) for r in m.reasoning if r.get("encrypted_content")]
    if m.content:
        out.append({"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": m.content}]})
    out += [{"type": "function_call", "call_id": c.id, "name": c.name,
             "arguments": c.arguments} for c in m.tool_calls]
    return out


def _reasoning_input(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in ("id", "type", "summary", "encrypted_content") if k in item}


def reply_of(body: dict[str, Any]) -> ProviderReply:
    """The reply in a ``response`` object (a JSON object)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    reasoning: list[dict[str, Any]] = []
    for item in body.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            texts += [p.get("text") or "" for p in item.get("content") or ()
                      if p.get("type") == "output_text"]
        elif kind == "function_call":
            calls.append(ToolCall(id=str(item["call_id"]), name=str(item["name"]),
                                  arguments=str(item.get("arguments") or "{}")))
        elif kind == "reasoning":
            reasoning.append({k: item[k] for k in ("id", "type", "summary", "encrypted_content")
                              if item.get(k) is not None})
    incomplete = (body.get("incomplete_details") or {}).get("reason")
    finish = "length" if incomplete == "max_output_tokens" else \
        "tool_calls" if calls else "stop"
    return ProviderReply(text="".join(texts), usage=from_openai_responses(body.get("usage")),
                         finish_reason=finish, provider_model=str(body.get("model", "")),
                         provider_request_id=str(body.get("id", "")), tool_calls=tuple(calls),
                         reasoning=tuple(reasoning))


def complete(client: Any, name: str, call: ProviderCall) -> ProviderReply:
    """One ``responses.create`` (raw JSON read, as the chat path does)."""
    kwargs = {**responses_body(call), **sdk_options(call)}
    try:
        raw = client.responses.with_raw_response.create(**kwargs)
        body = json.loads(raw.content)
    except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
        raise map_sdk_error(name, exc) from exc
    return _parsed(name, body)


def stream(client: Any, name: str, call: ProviderCall, on_text: TextSink) -> ProviderReply:
    """The same call streamed: text deltas go to ``on_text``; the reply is read from the
    final ``response.completed`` (or ``response.incomplete``) event."""
    kwargs = {**responses_body(call), **sdk_options(call)}
    final: dict[str, Any] | None = None
    try:
        for event in client.responses.create(**kwargs, stream=True):
            kind = event.type
            if kind == "response.output_text.delta":
                on_text(event.delta)
            elif kind in ("response.completed", "response.incomplete"):
                final = event.response.model_dump(mode="json")
            elif kind in ("error", "response.failed"):
                raise ProviderRetryable(f"{name}: the response stream failed: "
                                        f"{getattr(event, 'message', kind)}", provider=name,
                                        billed="unknown")
    except ProviderRetryable:
        raise
    except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
        raise map_sdk_error(name, exc) from exc
    if final is None:
        raise ProviderRetryable(f"{name}: the response stream ended before it completed",
                                provider=name, billed="unknown")
    return _parsed(name, final)


def _parsed(name: str, body: dict[str, Any]) -> ProviderReply:
    try:
        return reply_of(body)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProviderRetryable(f"{name}: the response lacked {exc!r}; retried",
                                provider=name, billed="unknown", unparseable=True) from exc
