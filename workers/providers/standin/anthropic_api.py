"""Anthropic messages wire format: ``POST /v1/messages``, prompt caching included."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.catalogue import ModelSpec
from workers.providers.standin.caching import anthropic_cache
from workers.providers.standin.errors import RequestInvalid, provider_error
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.prompt import anthropic_prompt
from workers.providers.standin.replies import make_reply, tool_use
from workers.providers.standin.state import StandInState

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}


async def messages(request: Request) -> Response:
    """Answer a messages call the way api.anthropic.com would, minus the model."""
    beta = request.headers.get("anthropic-beta")
    if beta:  # what a gateway forwarded, for tests to check
        request.app.state.standin.record_beta(beta)
    return await serve_call(request, "anthropic", api_key, answer)


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: the prompt's tokens as this stand-in bills them."""
    state: StandInState = request.app.state.standin
    state.record_request(request.url.path)
    try:
        api_key(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise RequestInvalid("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestInvalid("the request body must be a JSON object")
        if state.model(body.get("model"), "anthropic") is None:
            raise RequestInvalid(f"model: {body.get('model')!r} does not exist",
                                 param="model", status=404)
        response: Response = JSONResponse({"input_tokens": anthropic_prompt(body).total})
    except RequestInvalid as exc:
        response = provider_error("anthropic", exc.status, exc.message, param=exc.param)
    state.record_status(response.status_code)
    return response


def api_key(request: Request) -> str:
    """The caller's key (401 without one); ``anthropic-version`` is required too.

    The API takes ``x-api-key``; anthropic SDK 2.x sends its api_key as ``Authorization:
    Bearer`` instead, so both are accepted.
    """
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise RequestInvalid("x-api-key header is required", status=401)
    if not request.headers.get("anthropic-version"):
        raise RequestInvalid("anthropic-version: header is required")
    return key


def answer(state: StandInState, body: dict[str, Any], spec: ModelSpec, key: str) -> Answer:
    """Validate the body, account for cache breakpoints and build the ``message``."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestInvalid("max_tokens: Field required (a positive integer)")
    if body.get("stream") not in (None, True, False):
        raise RequestInvalid("stream: Input should be a valid boolean")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float))
                                        and 0 <= temperature <= 1):
        raise RequestInvalid("temperature: must be a number between 0 and 1")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestInvalid("stop_sequences: must be an array of strings")
    prompt = anthropic_prompt(body)
    cfg = state.config
    cache = anthropic_cache(prompt, state.anthropic_cache, f"{key}\x00{spec.name}",
                            spec.min_cacheable_tokens,
                            {"5m": cfg.anthropic_ttl_5m_s, "1h": cfg.anthropic_ttl_1h_s})
    reply = make_reply(f"{spec.name}|{prompt.digest}", prompt.last_user, max_tokens, stops)
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
    stop_reason, out_tokens = _STOP_REASONS[reply.finish], reply.tokens
    call = tool_use(prompt.last_user, [t.get("name") for t in body.get("tools") or ()])
    if call is not None:
        content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": call.name, "input": json.loads(call.arguments)}]
        stop_reason, out_tokens = "tool_use", call.tokens
    payload = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": reply.stop_sequence if call is None else None,
        "usage": {
            # input_tokens excludes both cache buckets, as Anthropic's does
            "input_tokens": prompt.total - cache.read - cache.written,
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": cache.written,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache.write_5m,
                               "ephemeral_1h_input_tokens": cache.write_1h},
            "service_tier": "standard",
        },
    }
    return Answer(payload, prompt.total, out_tokens, cache)
