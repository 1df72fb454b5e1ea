"""Gemini API wire format: ``generateContent``, ``streamGenerateContent``, ``countTokens``, caches
(embeddings in ``gemini_embed.py``, embedding batches in ``gemini_batch.py``).

Paths as the ``google-genai`` SDK calls them (``/v1beta/models/{model}:{method}``,
``/v1beta/cachedContents[/{id}]``), the key in ``x-goog-api-key``. Implicit caching is
emulated on repeated prefixes (tools + system instruction, then each content) of at least the
model's minimum, for ``gemini_implicit_ttl_s``; a request naming ``cachedContent`` reads the
whole explicit cache. Thinking models think unless ``thinkingBudget`` is 0, within
``maxOutputTokens``, and report ``thoughtsTokenCount``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from models.domain.tokens import count_text
from workers.providers.standin import gemini_batch, gemini_caches, gemini_embed
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.errors import RequestInvalid, gemini_error
from workers.providers.standin.faults import fault_response
from workers.providers.standin.gemini_prompt import gemini_prompt, pick
from workers.providers.standin.pipeline import (FAULT_HEADER, LATENCY_HEADER, _cut, _fault,
                                                _number, pause)
from workers.providers.standin.prompt import Prompt
from workers.providers.standin.options import json_text
from workers.providers.standin.replies import make_reply, tool_use
from workers.providers.standin.state import StandInState
from workers.providers.standin.streaming import paced, pieces

_FAMILY = "gemini"


def gemini_routes() -> list[Route]:
    """The Gemini API's routes (v1beta, and v1 which the SDK uses with a custom base URL), and
    Vertex AI's express-mode paths (v1beta1, publisher models, keyed by an API key)."""
    out = [Route("/v1beta1/publishers/google/models/{target:path}", models_call,
                 methods=["POST"])]
    for version in ("v1beta", "v1", "v1beta1"):
        out += [Route(f"/{version}/models/{{target:path}}", models_call, methods=["POST"]),
                Route(f"/{version}/cachedContents", cache_create, methods=["POST"]),
                Route(f"/{version}/batches", batches_list, methods=["GET"]),
                Route(f"/{version}/batches/{{target}}", batch_one, methods=["GET", "POST"]),
                Route(f"/{version}/cachedContents/{{cid}}", cache_one,
                      methods=["GET", "PATCH", "DELETE"])]
    return out


def _state(request: Request) -> StandInState:
    state: StandInState = request.app.state.standin
    return state


def api_key(request: Request) -> str:
    """``x-goog-api-key`` (or ``?key=``); 401 in Google's shape when there is none."""
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not key:
        raise RequestInvalid("Method doesn't allow unregistered callers (callers without "
                             "established identity). Please use API Key or other form of API "
                             "consumer identity to call this API.", status=403)
    return key


async def _guarded(request: Request, handler: Any) -> Response:
    state = _state(request)
    state.record_request(request.url.path)
    try:
        response: Response = await handler(state, api_key(request))
    except RequestInvalid as exc:
        response = gemini_error(exc.status, exc.message)
    state.record_status(response.status_code)
    response.headers["x-request-id"] = uuid.uuid4().hex
    return response


async def cache_create(request: Request) -> Response:
    """``POST cachedContents``."""
    return await _guarded(request, lambda st, key: gemini_caches.create(request, st, key))


async def cache_one(request: Request) -> Response:
    """``GET`` / ``PATCH`` / ``DELETE cachedContents/{id}``."""
    name = f"cachedContents/{request.path_params['cid']}"
    verb = {"GET": gemini_caches.get, "PATCH": gemini_caches.patch,
            "DELETE": gemini_caches.delete}[request.method]
    return await _guarded(request, lambda st, key: verb(request, st, key, name))


async def batches_list(request: Request) -> Response:
    """``GET batches`` (embedding batches, gemini_batch.py)."""
    return await _guarded(request, lambda st, key: gemini_batch.listing(request, st))


async def batch_one(request: Request) -> Response:
    """``GET batches/{id}`` and ``POST batches/{id}:cancel``."""
    target = str(request.path_params["target"])
    return await _guarded(request, lambda st, key: gemini_batch.one(request, st, target))


async def models_call(request: Request) -> Response:
    """``POST models/{model}:{generateContent|streamGenerateContent|countTokens|embedContent|
    batchEmbedContents|asyncBatchEmbedContent}``."""
    model, _, method = str(request.path_params["target"]).rpartition(":")

    async def handle(state: StandInState, key: str) -> Response:
        spec = state.model(model, _FAMILY)
        if spec is None:
            raise RequestInvalid(f"models/{model} is not found for API version v1beta, or is "
                                 "not supported for generateContent.", status=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise RequestInvalid("Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise RequestInvalid("the request body must be a JSON object")
        if method == "asyncBatchEmbedContent":
            return await gemini_batch.create(request, state, body, spec)
        if method in ("embedContent", "batchEmbedContents"):
            return await gemini_embed.embed(request, state, body, spec, method)
        if method == "countTokens":
            prompt = _prompt(state, body.get("generateContentRequest") or body, key, spec.name)
            return JSONResponse({"totalTokens": prompt.total})
        if method not in ("generateContent", "streamGenerateContent"):
            raise RequestInvalid(f"unknown method {method!r}", status=404)
        state.record_model(spec.name)
        body_with_model = {**body, "model": spec.name}  # the path names it, not the body
        state.record_body(_FAMILY, body_with_model)
        return await _generate(request, state, body, spec, key, stream=method.startswith("s"))

    return await _guarded(request, handle)


def _prompt(state: StandInState, body: dict[str, Any], key: str, model: str) -> Prompt:
    name = pick(body, "cachedContent")
    if not name:
        return gemini_prompt(body)
    entry = state.gemini_caches.live(str(name), key)
    if entry is None:
        raise RequestInvalid(f"CachedContent not found (or permission denied): {name}",
                             status=403)
    if entry.model != model:
        raise RequestInvalid(f"Model used by GenerateContent request ({model}) and "
                             f"CachedContent ({entry.model}) has to be the same.")
    return gemini_prompt(body, cached=entry.prompt)


async def _generate(request: Request, state: StandInState, body: dict[str, Any], spec: Any,
                    key: str, *, stream: bool) -> Response:
    fault = _fault(request, state, spec.name, _FAMILY)
    per_token_ms = state.config.per_token_latency_ms
    if fault is not None:
        state.faults_injected += 1
        if fault.kind == "slow":
            per_token_ms = fault.delay_s * 1000
        elif fault.kind == "timeout":
            await pause(request, fault.delay_s)
        elif fault.kind != "cut":
            return fault_response(fault, _FAMILY)
    payload, prompt_tokens, out_tokens, cache = answer(state, body, spec, key)
    state.record_usage(prompt_tokens, out_tokens, cache)
    override = request.headers.get(LATENCY_HEADER)
    first_ms = (_number(override, LATENCY_HEADER) if override is not None
                else state.config.latency_ms)
    if stream:
        events = gemini_events(payload)
        if fault is not None and fault.kind == "cut":
            events = _cut(events, fault.events)
        return StreamingResponse(paced(events, first_ms / 1000, per_token_ms / 1000,
                                       lambda s: pause(request, s)),
                                 media_type="text/event-stream")
    await pause(request, (first_ms + per_token_ms * out_tokens) / 1000)
    return JSONResponse(payload)


def answer(state: StandInState, body: dict[str, Any], spec: Any, key: str
           ) -> tuple[dict[str, Any], int, int, CacheUsage]:
    """The ``GenerateContentResponse`` for ``body``: payload, prompt and output tokens, cache."""
    config = pick(body, "generationConfig") or {}
    max_tokens = pick(config, "maxOutputTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestInvalid("max_output_tokens must be a positive integer")
    prompt = _prompt(state, body, key, spec.api_name or spec.name)
    explicit = bool(pick(body, "cachedContent"))
    cached = prompt.prefixes[0][0] if explicit else _implicit(state, prompt, key, spec)
    thinking = pick(config, "thinkingConfig") or {}
    budget = pick(thinking, "thinkingBudget")
    limit = max_tokens if max_tokens is not None else 8192
    # A thinking model thinks before it answers, within maxOutputTokens.
    thoughts = 0 if budget == 0 else min(16 + len(prompt.last_user) % 32,
                                         budget if isinstance(budget, int) and budget > 0
                                         else 10_000, limit // 2)
    reply = make_reply(f"{spec.name}|{prompt.digest}", prompt.last_user, limit - thoughts,
                       list(pick(config, "stopSequences") or []))
    text, out = reply.text, reply.tokens
    finish = "MAX_TOKENS" if reply.finish == "length" else "STOP"
    if pick(config, "responseMimeType") == "application/json":
        schema = pick(config, "responseJsonSchema") or pick(config, "responseSchema")
        text = (json_text(f"{spec.name}|{prompt.digest}", schema) if schema
                else json.dumps({"answer": text[:200]}))
        out = count_text(text)
    parts: list[dict[str, Any]] = []
    if thoughts and pick(thinking, "includeThoughts"):
        parts.append({"text": "Thinking it over.", "thought": True})
    call = _call(body, prompt)
    if call is not None:
        parts.append({"functionCall": {"id": f"call_{uuid.uuid4().hex[:12]}", "name": call.name,
                                       "args": json.loads(call.arguments)}})
        out, finish = call.tokens, "STOP"
    else:
        parts.append({"text": text})
    usage = {"promptTokenCount": prompt.total, "candidatesTokenCount": out,
             "totalTokenCount": prompt.total + out + thoughts}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached  # included in promptTokenCount
    payload = {"candidates": [{"content": {"role": "model", "parts": parts},
                               "finishReason": finish, "index": 0}],
               "usageMetadata": usage, "modelVersion": spec.api_name or spec.name,
               "responseId": hashlib.sha1(f"{time.time_ns()}".encode()).hexdigest()[:20]}
    return payload, prompt.total, out + thoughts, CacheUsage(read=cached)


def _call(body: dict[str, Any], prompt: Prompt) -> Any:
    """The function call to answer with: asked for ("use tool NAME"), or forced by toolConfig."""
    names = [str(fn.get("name")) for tool in body.get("tools") or []
             for fn in (pick(tool, "functionDeclarations") or [])]
    contents = body.get("contents") or []
    last = contents[-1].get("parts", []) if contents and isinstance(contents[-1], dict) else []
    if any(pick(p, "functionResponse") for p in last if isinstance(p, dict)):
        return None  # after a function's result the model answers in text
    calling = pick(pick(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(calling.get("mode", "AUTO")).upper()
    if mode == "NONE":
        return None
    allowed = list(pick(calling, "allowedFunctionNames") or names)
    found = tool_use(prompt.last_user, allowed)
    if found is None and mode in ("ANY", "VALIDATED") and allowed:
        found = tool_use(f"use tool {allowed[0]} {prompt.last_user}", allowed)
    return found


def _implicit(state: StandInState, prompt: Prompt, key: str, spec: Any) -> int:
    """Tokens of the longest prefix seen within the implicit TTL (then every prefix stored)."""
    store, scope = state.gemini_cache, f"{key}\x00{spec.name}"
    minimum, hit = spec.min_cacheable_tokens, 0
    if prompt.total < minimum:
        return 0
    for tokens, digest in reversed(prompt.prefixes):
        if tokens >= minimum and store.alive(f"{scope}|{digest}"):
            hit = tokens
            break
    for tokens, digest in prompt.prefixes:
        if tokens >= minimum:
            store.put(f"{scope}|{digest}", state.config.gemini_implicit_ttl_s)
    return hit


def gemini_events(payload: dict[str, Any]) -> Iterator[tuple[bytes, str]]:
    """``(event bytes, text)``: text pieces, then the last chunk with finish reason and usage."""
    candidate = payload["candidates"][0]
    parts = candidate["content"]["parts"]
    base = {"modelVersion": payload["modelVersion"], "responseId": payload["responseId"]}

    def chunk(part: dict[str, Any], last: bool = False) -> bytes:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        data: dict[str, Any] = {"candidates": [cand], **base}
        if last:
            cand["finishReason"] = candidate["finishReason"]
            data["usageMetadata"] = payload["usageMetadata"]
        return ("data: " + json.dumps(data, separators=(",", ":")) + "\r\n\r\n").encode()

    shown = [p for p in parts if not p.get("thought")]
    for p in parts:
        if p.get("thought"):
            yield chunk(p), ""
    for i, part in enumerate(shown):
        last_part = i == len(shown) - 1
        if "text" in part:
            bits = pieces(part["text"]) or [""]
            for j, bit in enumerate(bits):
                yield chunk({"text": bit}, last_part and j == len(bits) - 1), bit
        else:
            yield chunk(part, last_part), ""


__all__ = ["FAULT_HEADER", "gemini_routes"]
