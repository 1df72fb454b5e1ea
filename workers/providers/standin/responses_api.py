"""OpenAI Responses wire format: ``POST /v1/responses``, whole and streamed.

The body is read into the chat-completions body the stand-in already answers (same replies,
caching, tool calls, reasoning tokens), and the ``chat.completion`` is written back as a
``response`` object: a reasoning model's answer starts with a reasoning item, whose
``encrypted_content`` is sent when ``include`` asks for it and must come back verifiable:
with ``store`` false (what sluicegate sends), a reasoning item without it is a 404, as
OpenAI's is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from models.domain.catalogue import ModelSpec
from queues.http.wire import openai_responses_render as events
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.openai_api import answer as chat_answer
from workers.providers.standin.openai_api import bearer_key
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.state import StandInState
from workers.providers.standin.streaming import pieces

PARAMS = frozenset({"model", "input", "instructions", "tools", "tool_choice",
                    "max_output_tokens", "temperature", "top_p", "parallel_tool_calls",
                    "metadata", "prompt_cache_key", "safety_identifier", "service_tier",
                    "user", "store", "stream", "include", "reasoning", "text", "truncation"})
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "metadata",
         "prompt_cache_key", "safety_identifier", "service_tier", "user", "store", "stream")
ENCRYPTED = "reasoning.encrypted_content"
_SECRET = b"standin-reasoning"


async def responses(request: Request) -> Response:
    """Answer a Responses call the way api.openai.com would, minus the model."""
    return await serve_call(request, "openai", bearer_key, answer, events=stream_events)


def answer(state: StandInState, body: dict[str, Any], spec: ModelSpec, api_key: str) -> Answer:
    """Validate the body, answer it as chat completions would, and reshape the answer."""
    for name in body:
        if name not in PARAMS:
            raise RequestInvalid(f"Unknown parameter: '{name}'.", param=name)
    chat = chat_answer(state, chat_body(body), spec, api_key)
    return Answer(response_of(chat.payload, body), chat.prompt_tokens, chat.output_tokens,
                  chat.cache)


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body that asks what ``body`` asks."""
    out: dict[str, Any] = {k: body[k] for k in _SAME if k in body}
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += _messages(body.get("input"), body.get("store", True) is not False)
    out["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    text = body.get("text") or {}
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif fmt is not None:
        out["response_format"] = fmt
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise RequestInvalid("the stand-in runs function tools only", param="tools")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": fn}


def _messages(raw: Any, stored: bool) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise RequestInvalid("input must be a string or a non-empty array", param="input")
    out: list[dict[str, Any]] = []
    for item in raw:
        kind = item.get("type", "message")
        if kind == "reasoning":
            _verified(item, stored)
        elif kind == "function_call":
            if not (out and out[-1]["role"] == "assistant"):
                out.append({"role": "assistant", "content": None})
            out[-1].setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function",
                 "function": {"name": item["name"], "arguments": item["arguments"]}})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": item["output"]})
        elif kind == "message":
            out.append({"role": item["role"], "content": _content(item["content"])})
        else:
            raise RequestInvalid(f"input: {kind!r} items are not supported", param="input")
    return out


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if p.get("type") == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": p["image_url"],
                                                             "detail": p.get("detail", "auto")}})
        else:
            parts.append({"type": "text", "text": p["text"]})
    return parts


def _seal(item_id: str, model: str) -> str:
    tag = hashlib.sha256(_SECRET + item_id.encode() + model.encode()).hexdigest()[:16]
    return base64.b64encode(json.dumps({"id": item_id, "tag": tag}).encode()).decode()


def _verified(item: dict[str, Any], stored: bool) -> None:
    """A passed-back reasoning item must carry encrypted content we made (or be stored)."""
    sealed = item.get("encrypted_content")
    if sealed is None:
        if not stored:
            raise RequestInvalid(f"Item with id '{item.get('id')}' not found. Items are not "
                                 "persisted when `store` is set to false. Try again with "
                                 "`store` set to true, or remove this item from your input.",
                                 param="input", status=404)
        return
    try:
        item_id = json.loads(base64.b64decode(sealed))["id"]
    except (ValueError, KeyError, TypeError):
        item_id = None
    if item_id != item.get("id"):
        raise RequestInvalid(f"The encrypted content for item {item.get('id')} could not be "
                             "verified.", param="input")


def response_of(chat: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The ``response`` object for a ``chat.completion`` payload."""
    choice, usage = chat["choices"][0], chat["usage"]
    message, rid = choice["message"], chat["id"].removeprefix("chatcmpl-")
    output: list[dict[str, Any]] = []
    thought = usage["completion_tokens_details"]["reasoning_tokens"]
    if thought:
        summary = (body.get("reasoning") or {}).get("summary")
        item: dict[str, Any] = {"id": f"rs_{rid}", "type": "reasoning", "summary": [
            {"type": "summary_text", "text": f"Thought for {thought} tokens."}] if summary
            else []}
        if ENCRYPTED in (body.get("include") or ()):
            item["encrypted_content"] = _seal(item["id"], chat["model"])
        output.append(item)
    finish = choice["finish_reason"]
    if message.get("content") is not None:
        output.append({"id": f"msg_{rid}", "type": "message", "role": "assistant",
                       "status": "incomplete" if finish == "length" else "completed",
                       "content": [{"type": "output_text", "text": message["content"],
                                    "annotations": [], "logprobs": []}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        output.append({"id": f"fc_{rid}_{i}", "type": "function_call", "status": "completed",
                       "call_id": call["id"], "name": call["function"]["name"],
                       "arguments": call["function"]["arguments"]})
    return {"id": f"resp_{rid}", "object": "response", "created_at": int(time.time()),
            "status": "incomplete" if finish == "length" else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length"
            else None, "error": None, "model": chat["model"], "output": output,
            "instructions": body.get("instructions"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "store": body.get("store", True), "truncation": body.get("truncation", "disabled"),
            "usage": {"input_tokens": usage["prompt_tokens"],
                      "input_tokens_details": {"cached_tokens":
                                               usage["prompt_tokens_details"]["cached_tokens"],
                                               "cache_write_tokens": 0},
                      "output_tokens": usage["completion_tokens"],
                      "output_tokens_details": {"reasoning_tokens": thought},
                      "total_tokens": usage["total_tokens"]}}


def stream_events(payload: dict[str, Any]) -> Iterator[tuple[bytes, str]]:
    """The semantic events of a whole ``response``, text a few words per delta."""
    seq = events.Sequence()
    shell = {**payload, "status": "in_progress", "output": [], "usage": None}
    yield events.opening_events(seq, shell), ""
    for i, item in enumerate(payload["output"]):
        yield from events.item_events(seq, i, item, pieces)
    yield seq(events.final_kind(payload), response=payload), ""
