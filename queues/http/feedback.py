"""The ``POST /v1/feedback`` door: a caller's outcome for a request id, for the quality table."""

from __future__ import annotations

import functools

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from queues.http.pipeline import door, guarded, read_json


async def _feedback(request: Request) -> Response:
    """Body ``{"request_id", "thumb": 1|-1}`` and/or ``{"metric", "value"}``; the key's org
    and team own it (feedback on another team's request is refused as unknown)."""
    fd = door(request)
    key = await fd.keys.principal(request)
    body = await read_json(request)
    body.pop("team", None)
    body.pop("org", None)
    data = {**body, "team": key.team, "org": key.org}
    await run_in_threadpool(functools.partial(fd.gateway.feedback, data))
    return JSONResponse({"object": "feedback", "request_id": data.get("request_id"),
                         "recorded": True})


feedback = guarded(_feedback)
