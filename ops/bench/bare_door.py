"""The floor under any queue-based front door: HTTP in, a Celery no-op through the same broker
and worker, HTTP out; nothing else (``uvicorn --factory ops.bench.bare_door:from_env``).

``frontdoor_bench`` drives it beside the real front door: what a queue hop per request costs
on that machine before any front-door work, and the rate such a door holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def from_env() -> Starlette:
    """The app for ``SLUICE_*`` settings read now (broker and result store as the worker's)."""
    from starlette.concurrency import run_in_threadpool

    from models.domain.settings import load_settings
    from queues.app import create_app

    celery = create_app(load_settings(), name="bench-bare-door")
    celery.conf.result_backend_thread_safe = True

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        celery.close()

    def hop() -> str:
        # A thread per waiting request, from anyio's pool of 40: measured here, 512 threads
        # blocked in get() held a third of what 40 do at 500 req/s (they fight over the
        # result consumer), so 40 is the better floor.
        reply: str = celery.send_task("sluice.ping", queue="interactive.api").get(timeout=30)
        return reply

    async def chat(request: Request) -> Response:
        await request.body()
        return JSONResponse({"object": "chat.completion", "pong": await run_in_threadpool(hop)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)
