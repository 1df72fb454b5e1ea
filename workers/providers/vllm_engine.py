"""Provider adapter over the GPU worker's in-process vLLM engine, with lanes and prefix caching."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import ChatRequest, Message
from models.domain.settings import LanesSettings
from models.domain.usage import Usage
from workers.gpu.engine_io import (ASYNC_PRIORITY, INTERACTIVE_PRIORITY, EngineOutput,
                                   make_request)
from workers.gpu.vllm_errors import engine_dead
from workers.providers.base import ProviderCall, ProviderReply

if TYPE_CHECKING:
    from workers.gpu.batcher import LaneBatcher
    from workers.gpu.engine_host import EngineHost

_JSON_HINT = "Reply with one JSON object and nothing else."


def render_messages(request: ChatRequest) -> list[dict[str, str]]:
    """Chat messages with the static part first (system, tools, few-shot), then the dynamic turns.

    The static part must render to the same bytes every time so vLLM's prefix cache can reuse
    its KV blocks: tools are serialized with sorted keys and fixed separators, and nothing
    volatile (ids, timestamps) is ever put before the dynamic turns.
    """
    static = request.static
    system = static.system
    if static.tools:
        tools = [{"name": t.name, "description": t.description, "parameters": t.parameters}
                 for t in static.tools]
        system += ("\n\n# Tools\nTo call a tool, reply with "
                   '{"tool": NAME, "arguments": {...}}. Tools:\n'
                   + json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    if request.response_format == "json":
        # last in the system block, so requests that differ only here still share the rest
        system += ("\n\n" if system else "") + _JSON_HINT
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    messages += [{"role": m.role, "content": m.content} for m in static.few_shot]
    after_result = False
    for m in request.messages:
        turn = _plain(m)
        if after_result and m.role in ("tool", "user"):
            # Results (and the user's text after them) join one user turn: many templates
            # (Mistral, Gemma, Llama 2) refuse two user turns in a row.
            messages[-1] = {"role": "user",
                            "content": messages[-1]["content"] + "\n\n" + turn["content"]}
        else:
            messages.append(turn)
        after_result = m.role == "tool"
    return messages


def _plain(m: Message) -> dict[str, str]:
    """A turn as chat-template text: calls in the format the tool hint asks for, and results
    as user turns (not every model's template knows a tool role). Plain turns go verbatim."""
    if m.role == "tool":
        return {"role": "user", "content": f"Result of tool call {m.tool_call_id}:\n{m.content}"}
    if not m.tool_calls:
        return {"role": m.role, "content": m.content}
    calls = [json.dumps({"tool": c.name, "arguments": json.loads(c.arguments)},
                        sort_keys=True, separators=(",", ":")) for c in m.tool_calls]
    return {"role": m.role, "content": "\n".join([m.content, *calls]) if m.content
            else "\n".join(calls)}


def usage_of(out: EngineOutput) -> Usage:
    """Billing classes of one engine output: cached prompt tokens are cache reads."""
    cached = min(out.cached_tokens, out.prompt_tokens)
    return Usage(input_uncached=out.prompt_tokens - cached, cache_read=cached,
                 output=out.output_tokens)


class VllmEngineProvider:
    """The ``vllm`` provider: each lane has its engine priority (interactive first); a lane with
    a batcher (the async lane, by default) is gathered and sent in batches, the others go
    straight in."""

    name = "vllm"

    def __init__(self, host: EngineHost, *, batchers: Mapping[str, LaneBatcher] | None = None,
                 lanes: LanesSettings | None = None, served_model: str | None = None,
                 interactive_priority: int = INTERACTIVE_PRIORITY,
                 async_priority: int = ASYNC_PRIORITY) -> None:
        self._host = host
        self._batchers = dict(batchers or {})
        self._lanes = lanes or LanesSettings()
        self._served_model = served_model
        self._priorities = {"interactive": interactive_priority, "async": async_priority}

    def complete(self, call: ProviderCall) -> ProviderReply:
        """One attempt: render, send on the request's lane, wait up to the lane's soft limit."""
        request = call.request
        self._check_model(call)
        lane = request.lane
        engine_request = make_request(
            messages=render_messages(request), max_tokens=request.max_tokens,
            temperature=request.temperature, stop=request.stop,
            priority=self._priorities.get(lane, INTERACTIVE_PRIORITY),
            request_id=request.request_id)
        batcher = self._batchers.get(lane)
        if batcher is not None:
            future = batcher.submit(engine_request)
        else:
            future = self._host.submit_request(engine_request)
        limit = self._lanes.get(lane).soft_time_limit_s
        try:
            out = future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()  # aborts the request inside vLLM, freeing its batch slot
            raise ProviderRetryable(
                f"vLLM did not answer within the {lane} lane's {limit:g} s; the GPU pool is "
                "overloaded or the request is too long", provider=self.name) from None
        except concurrent.futures.CancelledError:
            raise engine_dead("the request was cancelled by an engine shutdown") from None
        if out.finish_reason in ("abort", "error"):
            raise ProviderRetryable(f"vLLM ended the request with {out.finish_reason!r}",
                                    provider=self.name)
        return ProviderReply(
            text=out.text, usage=usage_of(out), finish_reason=out.finish_reason,
            stop_sequence=out.stop_sequence,
            provider_model=self._host.served_model_name, provider_request_id=out.request_id,
            extra={"lane": lane, "priority": out.priority, "prompt_tokens": out.prompt_tokens,
                   "cached_tokens": out.cached_tokens,
                   "cache_creation_tokens": out.cache_creation_tokens,
                   "engine_ms": round(out.latency_s * 1000, 2)})

    def close(self) -> None:
        """Nothing to release: the engine and batchers belong to the GPU runtime."""

    def _check_model(self, call: ProviderCall) -> None:
        if call.model.provider != "vllm":
            raise ProviderPermanent(
                f"model {call.model.name!r} is served by {call.model.provider}, not the GPU pool; "
                "this is a routing bug", provider=self.name, status=400)
        if self._served_model and call.model.name != self._served_model:
            raise ProviderPermanent(
                f"this GPU worker serves {self._served_model!r}, not {call.model.name!r}; set "
                "routing.self_hosted_model to the model the GPU workers load",
                provider=self.name, status=404)
