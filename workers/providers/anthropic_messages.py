"""Anthropic messages adapter through the official ``anthropic`` SDK (its retries off): one
adapter, three transports (Anthropic's API, AWS Bedrock, Google Vertex AI), the SDK's own
clients for each, so prompt caching, tools and streaming work the same on all three."""

from __future__ import annotations

import json
from typing import Any

from models.domain.errors import ProviderRetryable
from models.domain.thinking import thinking_of
from models.domain.tokens import count_text
from models.domain.usage import Usage, from_anthropic
from workers.providers.base import (ProviderCall, ProviderReply, TextSink, sdk_options,
                                    send_part)
from workers.providers.errors import map_sdk_error
from workers.providers.shaping import anthropic_message_params
from workers.providers.tool_calls import anthropic_streamed_call, calls_in_anthropic_content

_FINISH = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop",
           "tool_use": "tool_calls"}


def reply_of(body: dict[str, Any]) -> ProviderReply:
    """A ``message`` body (a JSON object) as our reply."""
    content = body["content"]
    text = "".join(b.get("text") or "" for b in content if b.get("type") == "text")
    calls = calls_in_anthropic_content(content)
    thinking = thinking_of(content)
    stop = body.get("stop_reason")
    return ProviderReply(text=text, usage=with_reasoning(from_anthropic(body.get("usage")),
                                                          bool(thinking), text, calls),
                         tool_calls=calls, thinking=thinking,
                         finish_reason=_FINISH.get(stop or "", "stop"),
                         stop_sequence=_matched(stop, body.get("stop_sequence")),
                         provider_model=str(body.get("model", "")),
                         provider_request_id=str(body.get("id", "")))


class AnthropicMessagesProvider:
    """One attempt per ``complete``; the static prefix carries a cache_control breakpoint."""

    name = "anthropic"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 60.0, http_client: Any = None, transport: str = "anthropic",
                 region: str | None = None, project: str | None = None,
                 access_token: str | None = None) -> None:
        import anthropic

        common: dict[str, Any] = {"base_url": base_url, "timeout": timeout, "max_retries": 0,
                                  "http_client": http_client}
        self.transport = transport
        if transport == "bedrock":
            # SigV4 from the AWS credential chain (environment, profile, role); the model id
            # goes in the path (/model/{id}/invoke), as Bedrock's runtime API takes it.
            self._client: Any = anthropic.AnthropicBedrock(aws_region=region, **common)
        elif transport == "vertex":
            # An access token when given, else Google's default credentials.
            self._client = anthropic.AnthropicVertex(region=region, project_id=project,
                                                     access_token=access_token, **common)
        else:
            self._client = anthropic.Anthropic(api_key=api_key, **common)

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Call messages.create once and normalize its usage (input_tokens excludes cache).

        Through ``with_raw_response``, as the OpenAI adapter: the SDK still builds, sends and
        checks the request (its typed errors and all), but the few fields we need are read
        from the JSON body instead of having it build the typed ``Message`` (pydantic
        construction of every block on the worker's hottest path).
        """
        kwargs = {**_untyped_in_extra_body(anthropic_message_params(call)), **sdk_options(call)}
        _forward_headers(call, kwargs)
        try:
            raw = self._client.messages.with_raw_response.create(**kwargs)
            body = json.loads(raw.http_response.content)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        try:
            return reply_of(body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderRetryable(f"{self.name}: the response lacked {exc!r}; retried",
                                    provider=self.name, billed="unknown",
                                    unparseable=True) from exc

    def stream(self, call: ProviderCall, on_text: TextSink) -> ProviderReply:
        """The same call with ``stream=True``: each text delta goes to ``on_text`` as it
        arrives; usage is the start event's, with the output tokens of the last delta."""
        kwargs = {**_untyped_in_extra_body(anthropic_message_params(call)), **sdk_options(call)}
        _forward_headers(call, kwargs)
        text: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        stop, matched, model, rid = "", None, "", ""
        try:
            for event in self._client.messages.create(**kwargs, stream=True):
                kind = event.type
                if kind == "message_start":
                    usage = event.message.usage.model_dump()
                    model, rid = event.message.model, event.message.id
                elif kind == "content_block_start":
                    _open_block(event.index, event.content_block, blocks, on_text)
                elif kind == "content_block_delta":
                    _delta(event.index, event.delta, blocks, text, on_text)
                elif kind == "message_delta":
                    stop = event.delta.stop_reason or stop
                    matched = getattr(event.delta, "stop_sequence", None) or matched
                    usage["output_tokens"] = event.usage.output_tokens
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        ordered = [b for _, b in sorted(blocks.items())]
        calls = tuple(anthropic_streamed_call(b["id"], b["name"], b["json"])
                      for b in ordered if b["type"] == "tool_use")
        thinking = thinking_of(b for b in ordered if b["type"] != "tool_use")
        return ProviderReply(text="".join(text), tool_calls=calls, thinking=thinking,
                             usage=with_reasoning(from_anthropic(usage), bool(thinking),
                                                   "".join(text), calls),
                             finish_reason=_FINISH.get(stop, "stop"),
                             stop_sequence=_matched(stop, matched), provider_model=model,
                             provider_request_id=rid)

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()


def _open_block(index: int, block: Any, blocks: dict[int, dict[str, Any]],
                on_text: TextSink) -> None:
    """A streamed block starts: tool calls and thinking are kept by index (text is not)."""
    if block.type == "tool_use":
        blocks[index] = {"type": "tool_use", "id": block.id, "name": block.name, "json": ""}
    elif block.type == "thinking":
        blocks[index] = {"type": "thinking", "thinking": "", "signature": ""}
    elif block.type == "redacted_thinking":
        blocks[index] = {"type": "redacted_thinking", "data": block.data}
        send_part(on_text, "redacted_thinking", block.data)


def _delta(index: int, delta: Any, blocks: dict[int, dict[str, Any]], text: list[str],
           on_text: TextSink) -> None:
    """A streamed delta: text to the sink as it comes, thinking and its signature too."""
    into = blocks.get(index)
    if delta.type == "text_delta":
        text.append(delta.text)
        on_text(delta.text)
    elif delta.type == "input_json_delta" and into is not None:
        into["json"] += delta.partial_json
    elif delta.type == "thinking_delta" and into is not None:
        into["thinking"] += delta.thinking
        send_part(on_text, "thinking", delta.thinking)
    elif delta.type == "signature_delta" and into is not None:
        into["signature"] += delta.signature
        send_part(on_text, "signature", delta.signature)


def _matched(stop_reason: str | None, sequence: str | None) -> str | None:
    """The stop sequence that ended the answer (Anthropic names it with that stop reason)."""
    return sequence if stop_reason == "stop_sequence" and sequence else None


def _forward_headers(call: ProviderCall, kwargs: dict[str, Any]) -> None:
    """The caller's ``anthropic-beta`` / ``anthropic-version`` (the Messages door's client
    sent them) go on as sent; the SDK's own version header applies otherwise."""
    if call.request.provider_headers:
        kwargs["extra_headers"] = dict(call.request.provider_headers)


#: Parameters the SDK (2.x) no longer types but the API takes: sent in ``extra_body``.
_UNTYPED = ("temperature", "top_p", "top_k")


def _untyped_in_extra_body(params: dict[str, Any]) -> dict[str, Any]:
    extra = {k: params.pop(k) for k in _UNTYPED if k in params}
    if extra:
        params["extra_body"] = extra
    return params


def with_reasoning(usage: Usage, thought: bool, text: str, calls: Any) -> Usage:
    """Anthropic bills thinking inside ``output_tokens`` and reports no split (and returns
    only a summary of the thinking): reasoning is the output beyond the visible answer."""
    if not thought:
        return usage
    visible = count_text(text) + sum(count_text(c.arguments) for c in calls)
    return usage.model_copy(update={"reasoning": max(usage.output - visible, 0)})
