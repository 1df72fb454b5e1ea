"""The stand-in's Starlette app: provider routes, model lists, and the ``/_standin`` controls."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.domain.tokens import encoding
from workers.providers.standin.anthropic_api import count_tokens, messages
from workers.providers.standin.batch_api import batch_routes
from workers.providers.standin.config import StandInConfig
from workers.providers.standin.embeddings_api import embeddings
from workers.providers.standin.errors import openai_error
from workers.providers.standin.faults import parse_fault
from workers.providers.standin.gemini_api import gemini_routes
from workers.providers.standin.openai_api import chat_completions
from workers.providers.standin.platforms import platform_routes
from workers.providers.standin.responses_api import responses
from workers.providers.standin.state import StandInState


def create_app(config: StandInConfig | None = None) -> Starlette:
    """A fresh stand-in app with its own caches, fault scripts and counters."""
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/_standin/stats", stats, methods=["GET"]),
        Route("/_standin/received", received, methods=["GET"]),
        Route("/_standin/reset", reset, methods=["POST"]),
        Route("/_standin/faults", script_faults, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    routes += batch_routes()  # OpenAI Batch and Anthropic Message Batches
    routes += gemini_routes()  # generateContent, streamGenerateContent, countTokens, caches
    routes += platform_routes()  # Bedrock and Vertex (Claude), Azure OpenAI
    # Load the tokenizer now (about 0.5 s, once per process) rather than in the first request.
    encoding()
    app = Starlette(routes=routes)
    app.state.standin = StandInState(config or StandInConfig())
    return app


def _state(request: Request) -> StandInState:
    state: StandInState = request.app.state.standin
    return state


async def list_models(request: Request) -> Response:
    """``GET /v1/models`` in OpenAI's shape, or Anthropic's when ``anthropic-version`` is sent."""
    state = _state(request)
    state.record_request(request.url.path)
    has_key = bool(request.headers.get("x-api-key")
                   or request.headers.get("authorization", "").partition(" ")[2].strip())
    if not has_key:
        return openai_error(401, "You didn't provide an API key.")
    if request.headers.get("anthropic-version"):
        data = [{"type": "model", "id": m.api_name or m.name, "display_name": m.name,
                 "created_at": "2025-01-01T00:00:00Z"} for m in state.models("anthropic")]
        return JSONResponse({"data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})
    data = [{"id": m.api_name or m.name, "object": "model", "created": 0, "owned_by": m.provider}
            for m in state.models("openai")]
    return JSONResponse({"object": "list", "data": data})


async def stats(request: Request) -> Response:
    """Requests per path, model and status; token totals; cache and fault-script sizes."""
    return JSONResponse(_state(request).stats())


async def received(request: Request) -> Response:
    """The model-call bodies received (``?contains=`` filters), images as hashes."""
    return JSONResponse(_state(request).find_received(request.query_params.get("contains")))


async def reset(request: Request) -> Response:
    """Clear counters, prompt caches and fault scripts."""
    _state(request).reset()
    return JSONResponse({"reset": True})


async def script_faults(request: Request) -> Response:
    """Queue faults: ``{"model"?, "path"?: "openai"|"anthropic"|"gemini"|"bedrock"|"vertex"|
    "azure", "faults": [...]}``."""
    state = _state(request)
    try:
        body: Any = json.loads(await request.body())
        if not isinstance(body, dict) or not isinstance(body.get("faults"), list):
            raise ValueError("body must be an object with a 'faults' array of spec strings")
        faults = [parse_fault(spec) for spec in body["faults"]]
        state.faults.add(faults, model=body.get("model"), family=body.get("path"))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"queued": len(faults), "pending": state.faults.pending()})


async def healthz(request: Request) -> Response:
    """Liveness probe."""
    return JSONResponse({"status": "ok"})
