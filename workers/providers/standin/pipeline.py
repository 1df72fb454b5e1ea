"""The steps every model call shares: auth, body, model, faults, answer, latency, counters."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from models.domain.catalogue import ModelSpec
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.errors import RequestInvalid, provider_error
from workers.providers.standin.faults import Fault, fault_response, parse_fault
from workers.providers.standin.state import StandInState
from workers.providers.standin.streaming import anthropic_events, openai_events, paced

FAULT_HEADER = "x-standin-fault"
LATENCY_HEADER = "x-standin-latency-ms"


@dataclass(frozen=True)
class Answer:
    """A successful reply body and the tokens it accounts for."""

    payload: dict[str, Any]
    prompt_tokens: int
    output_tokens: int
    cache: CacheUsage


#: Builds the answer from (state, body, model, api key); raises RequestInvalid to refuse.
Answerer = Callable[[StandInState, dict[str, Any], ModelSpec, str], Answer]
#: Returns the caller's API key, or raises RequestInvalid (401/400) when the headers are wrong.
Authenticator = Callable[[Request], str]
#: Turns a platform's body into its wire format's (the model from the path, say).
Preparer = Callable[[Request, dict[str, Any]], dict[str, Any]]
#: Re-frames a stream's server-sent events (Bedrock's AWS event-stream).
Framer = Callable[[Any], Any]
#: The wire format a platform's paths speak.
WIRE = {"bedrock": "anthropic", "vertex": "anthropic", "azure": "openai"}


#: A payload's stream events, ``(bytes, text carried)`` each, for a wire of its own events.
Eventer = Callable[[dict[str, Any]], Any]


async def serve_call(request: Request, family: str, authenticate: Authenticator,
                     answer: Answerer, *, prepare: Preparer | None = None,
                     frame: Framer | None = None, events: Eventer | None = None) -> Response:
    """Run one model call through the shared steps and count how it ended. ``family`` is a
    wire format or a platform speaking one (``WIRE``): faults and model lists go by it;
    ``events``: the stream events of the call's own wire, else its family's."""
    state: StandInState = request.app.state.standin
    started = time.perf_counter()
    state.record_request(request.url.path)
    wire = WIRE.get(family, family)
    try:
        response = await _serve(request, state, family, authenticate, answer, prepare, frame,
                                events)
    except RequestInvalid as exc:
        response = provider_error(wire, exc.status, exc.message, param=exc.param)
    state.record_status(response.status_code)
    # Request ids as the real APIs send them, so SDK errors carry one.
    response.headers["x-request-id" if wire == "openai" else "request-id"] = uuid.uuid4().hex
    response.headers["x-standin-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response


async def _serve(request: Request, state: StandInState, family: str,
                 authenticate: Authenticator, answer: Answerer, prepare: Preparer | None,
                 frame: Framer | None, eventer: Eventer | None = None) -> Response:
    api_key = authenticate(request)
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise RequestInvalid("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestInvalid("the request body must be a JSON object")
    if prepare is not None:
        body = prepare(request, body)
    wire = WIRE.get(family, family)
    state.record_body(wire, body)
    name = body.get("model")
    spec = state.model(name, family)
    if spec is None:
        raise RequestInvalid(f"model: {name!r} does not exist or is not served by this "
                             f"{family} endpoint", param="model", status=404)
    state.record_model(spec.name)
    fault = _fault(request, state, spec.name, family)
    cfg = state.config
    per_token_ms = cfg.per_token_latency_ms
    if fault is not None:
        state.faults_injected += 1
        if fault.kind == "slow":
            per_token_ms = fault.delay_s * 1000
        elif fault.kind == "cut":
            pass  # applied to the stream below
        elif fault.kind != "timeout":
            return fault_response(fault, wire)
        else:
            await pause(request, fault.delay_s)
    result = answer(state, body, spec, api_key)
    override = request.headers.get(LATENCY_HEADER)
    state.record_usage(result.prompt_tokens, result.output_tokens, result.cache)
    if body.get("stream") is True:
        first_ms = _number(override, LATENCY_HEADER) if override is not None else cfg.latency_ms
        events = (eventer(result.payload) if eventer is not None
                  else openai_events(result.payload, _include_usage(body)) if wire == "openai"
                  else anthropic_events(result.payload))
        if fault is not None and fault.kind == "cut":
            events = _cut(events, fault.events)
        if frame is not None:
            events = frame(events)
        return StreamingResponse(
            paced(events, first_ms / 1000, per_token_ms / 1000,
                  lambda s: pause(request, s)),
            media_type=getattr(frame, "media_type", "text/event-stream"))
    delay_ms = (_number(override, LATENCY_HEADER) if override is not None
                else cfg.latency_ms + per_token_ms * result.output_tokens)
    await pause(request, delay_ms / 1000)
    return JSONResponse(result.payload)


class ConnectionCut(Exception):
    """Raised mid-body: the server drops the connection, as a provider's proxy may."""


def _cut(events: Any, n: int) -> Any:
    """The first ``n`` events, then a dropped connection (no final event, no usage)."""
    for i, event in enumerate(events):
        if i >= n:
            raise ConnectionCut(f"stand-in: connection cut after {n} events (injected)")
        yield event


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _fault(request: Request, state: StandInState, model: str, family: str) -> Fault | None:
    spec = request.headers.get(FAULT_HEADER)
    if spec is None:
        return state.faults.take(model, family)
    try:
        return parse_fault(spec)
    except ValueError as exc:
        raise RequestInvalid(f"{FAULT_HEADER}: {exc}") from None


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise RequestInvalid(f"{what}: {value!r} is not a number") from None
    if number < 0:
        raise RequestInvalid(f"{what}: must not be negative")
    return number


async def pause(request: Request, seconds: float) -> None:
    """Sleep ``seconds``; return early if the client hangs up or the server is stopping.

    Without the early return a scripted ``timeout=30`` would hold shutdown until uvicorn
    cancels the task (and logs a traceback).
    """
    if seconds <= 0:
        return
    state: StandInState = request.app.state.standin
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, 0.05))
        if state.closing or await request.is_disconnected():
            return
