"""Anthropic messages wire format: ``POST /v1/messages``, prompt caching included."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text
from workers.providers.standin.caching import anthropic_cache
from workers.providers.standin.errors import RequestInvalid, provider_error
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.prompt import anthropic_prompt
from workers.providers.standin.options import (ANTHROPIC_PARAMS, check_range, choose_call, fit,
                                               json_text, thinking_text, unknown)
from workers.providers.standin.replies import make_reply
from workers.providers.standin.state import StandInState
from workers.providers.standin.thinking import (REDACTED_TRIGGER, check_thinking,
                                                redacted_block, thinking_block)

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
    unknown(body, ANTHROPIC_PARAMS)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestInvalid("max_tokens: Field required (a positive integer)")
    if body.get("stream") not in (None, True, False):
        raise RequestInvalid("stream: Input should be a valid boolean")
    check_range(body, "temperature", 0, 1)
    check_range(body, "top_p", 0, 1)
    if body.get("temperature") is not None and body.get("top_p") is not None:
        raise RequestInvalid("`temperature` and `top_p` cannot both be specified for this "
                             "model. Please use only one.")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestInvalid("stop_sequences: must be an array of strings")
    thinking = _thinking(body, spec, max_tokens)
    check_thinking(body.get("messages"), bool(thinking))
    choice = _choice(body.get("tool_choice"), thinking)
    _metadata(body)
    prompt = anthropic_prompt(body, spec.can("vision"))
    cfg = state.config
    cache = anthropic_cache(prompt, state.anthropic_cache, f"{key}\x00{spec.name}",
                            spec.min_cacheable_tokens,
                            {"5m": cfg.anthropic_ttl_5m_s, "1h": cfg.anthropic_ttl_1h_s})
    seed = f"{spec.name}|{prompt.digest}"
    content: list[dict[str, Any]] = []
    thought = 0
    if thinking:
        # Thinks for up to its budget (a few hundred tokens here), within max_tokens.
        words = thinking_text(seed, min(thinking, 150 + int(prompt.digest[:2], 16)))
        content.append(thinking_block(words))
        thought = count_text(words)
        if REDACTED_TRIGGER in prompt.last_user:
            # Some thinking comes back encrypted; it is billed as output all the same.
            content.append(redacted_block(seed))
            thought += 64
    reply = make_reply(seed, prompt.last_user, max_tokens - thought, stops)
    text, tokens, clipped = fit(_formatted(body.get("output_config"), seed, reply.text),
                                max_tokens - thought)
    content.append({"type": "text", "text": text})
    stop_reason = "max_tokens" if clipped else _STOP_REASONS[reply.finish]
    out_tokens = thought + tokens
    call = choose_call(choice, prompt.last_user, [t.get("name") for t in body.get("tools") or ()],
                       answered=False)
    if call is not None:
        content = content[:-1] + [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}",
                                   "name": call.name, "input": json.loads(call.arguments)}]
        stop_reason, out_tokens = "tool_use", thought + call.tokens
    payload = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": reply.stop_sequence if call is None and not clipped else None,
        "usage": {
            # input_tokens excludes both cache buckets, as Anthropic's does
            "input_tokens": prompt.total - cache.read - cache.written,
            # thinking is billed as output: it is inside output_tokens, not reported apart
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": cache.written,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache.write_5m,
                               "ephemeral_1h_input_tokens": cache.write_1h},
            "service_tier": "standard",
        },
    }
    return Answer(payload, prompt.total, out_tokens, cache)


def _thinking(body: dict[str, Any], spec: ModelSpec, max_tokens: int) -> int:
    """The thinking budget, checked as Anthropic does (0: no thinking)."""
    config = body.get("thinking")
    if config is None or (isinstance(config, dict) and config.get("type") == "disabled"):
        return 0
    if not isinstance(config, dict) or config.get("type") != "enabled":
        raise RequestInvalid("thinking.type: Input should be 'enabled' or 'disabled'")
    if not spec.can("reasoning"):
        raise RequestInvalid(f"thinking: {spec.name} does not support extended thinking")
    budget = config.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
        raise RequestInvalid("thinking.enabled.budget_tokens: Input should be greater than or "
                             "equal to 1024")
    if budget >= max_tokens:
        raise RequestInvalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    if body.get("temperature") not in (None, 1):
        raise RequestInvalid("`temperature` may only be set to 1 when thinking is enabled")
    if body.get("top_p") is not None and body["top_p"] < 0.95:
        raise RequestInvalid("`top_p` must be greater than or equal to 0.95 when thinking is "
                             "enabled")
    return budget


def _choice(raw: Any, thinking: int) -> Any:
    """``tool_choice`` as a mode or a tool name; forcing a tool is refused while thinking."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise RequestInvalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    extra = set(raw) - {"type", "name", "disable_parallel_tool_use"}
    if extra:
        raise RequestInvalid(f"tool_choice.{sorted(extra)[0]}: Extra inputs are not permitted")
    if thinking and kind in ("any", "tool"):
        raise RequestInvalid("Thinking may not be enabled when tool_choice forces tool use.")
    if kind == "tool":
        if not isinstance(raw.get("name"), str):
            raise RequestInvalid("tool_choice.name: Field required")
        return raw["name"]
    return kind


def _metadata(body: dict[str, Any]) -> None:
    meta = body.get("metadata")
    if meta is not None and (not isinstance(meta, dict) or set(meta) - {"user_id"}):
        raise RequestInvalid("metadata: only user_id is permitted")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise RequestInvalid("service_tier: Input should be 'auto' or 'standard_only'")


def _formatted(config: Any, seed: str, text: str) -> str:
    """Structured outputs: the answer as JSON following ``output_config.format``'s schema."""
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return text
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" \
            or not isinstance(fmt.get("schema"), dict):
        raise RequestInvalid("output_config.format: type 'json_schema' with a schema")
    return json_text(seed, fmt["schema"])
