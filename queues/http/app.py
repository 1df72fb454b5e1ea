"""The front door's ASGI app factory: ``uvicorn --factory queues.http.app:from_env``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.domain.request import TIER_POLICIES
from models.domain.settings import Settings
from queues.gc_freeze import freeze_once
from queues.http import admin, chat, doors, embeddings, feedback, responses_state
from queues.http.context import FrontDoor
from queues.http.errors import Problem, error_response
from queues.http.openapi import openapi_schema

log = logging.getLogger(__name__)


def create_app(settings: Settings, *,
               on_start: Callable[[FrontDoor], AbstractContextManager[Any]] | None = None,
               **gateway_overrides: Any) -> Starlette:
    """An app serving the OpenAI chat and Anthropic Messages APIs; its parts are built when it
    starts up.

    ``on_start`` gets the built front door and returns a context held while the app serves
    (the embedded default runs its in-process worker this way). ``gateway_overrides`` replace
    Gateway levers (``admission=...``, ``cache=None``), as for :func:`queues.producer.connect`.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        door = await run_in_threadpool(lambda: FrontDoor.build(settings, **gateway_overrides))
        app.state.door = door
        freeze_once()  # what the door keeps, out of full collections (queues/gc_freeze.py)
        extras = ExitStack()
        # Only a door that sheds and has a shared tally has refusals to report.
        flusher = (asyncio.create_task(_flush_shed_every(door, SHED_FLUSH_S))
                   if door.shedder is not None and door.tally is not None else None)
        try:
            if on_start is not None:
                await run_in_threadpool(extras.enter_context, on_start(door))
            yield
        finally:
            if flusher is not None:
                flusher.cancel()
            await run_in_threadpool(extras.close)
            await door.close()

    async def openapi(request: Request) -> Response:
        schema = getattr(request.app.state, "openapi", None)
        if schema is None:  # built once, from the catalogue the gateway routes with
            door: FrontDoor = request.app.state.door
            models = [*TIER_POLICIES, *door.catalogue.models]
            schema = request.app.state.openapi = openapi_schema(models)
        return JSONResponse(schema)

    routes = [
        Route("/v1/chat/completions", doors.chat_completions, methods=["POST"]),
        Route("/v1/messages", doors.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", doors.count_tokens, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/responses", doors.responses, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses_state.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses_state.delete_response,
              methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", responses_state.input_items,
              methods=["GET"]),
        Route("/v1/feedback", feedback.feedback, methods=["POST"]),
        Route("/v1/jobs/{job_id}", chat.get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}", chat.cancel_job, methods=["DELETE"]),
        Route("/v1/models", chat.list_models, methods=["GET"]),
        Route("/admin/keys", admin.create_key_endpoint, methods=["POST"]),
        Route("/admin/keys", admin.list_keys_endpoint, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.revoke_key_endpoint, methods=["DELETE"]),
        Route("/admin/health", admin.health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: server_error})


#: How often a front door adds its refusals to the shared tally (queues/shed_tally.py).
SHED_FLUSH_S = 1.0


async def _flush_shed_every(door: FrontDoor, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await run_in_threadpool(door.flush_shed)


def from_env() -> Starlette:
    """The app for ``SLUICE_*`` settings read now: the entry point uvicorn's ``--factory`` calls."""
    from models.domain.settings import load_settings

    return create_app(load_settings())


async def healthz(request: Request) -> Response:
    """Liveness: the process answers (no key needed; ``/admin/health`` checks dependencies)."""
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 / 405 and friends, in the shape of the door the path belongs to."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "error"
    if status == 404:
        detail = f"no route {request.method} {request.url.path}; see /openapi.json"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    if request.url.path.startswith("/v1/messages"):
        return doors.ANTHROPIC_MESSAGES.error(Problem(status, str(detail),
                                                      headers=getattr(exc, "headers", None)))
    return error_response(status, str(detail), headers=getattr(exc, "headers", None))


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with its traceback, answered in OpenAI's shape."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal error ({type(exc).__name__}); the request may not "
                          "have been dispatched: retry it with the same x-sluice-request-id",
                          retry=False)
