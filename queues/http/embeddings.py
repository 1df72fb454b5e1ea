"""The ``POST /v1/embeddings`` door: OpenAI's wire format around the producer's embedding path."""

from __future__ import annotations

import functools
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.embedding import EmbeddingResult
from models.domain.errors import ValidationError
from queues.http.auth import apply_key_policy, bill_as_key_allows
from queues.http.context import FrontDoor
from queues.http.pipeline import door, guarded, read_json
from queues.http.wire.common import H_LANE, param_for
from queues.http.wire.openai_embeddings import headers_of, render, to_embedding_request


async def _embeddings(request: Request) -> Response:
    """Embed the inputs (cached items from the item cache, the rest through a worker) and
    answer every one in order; both lanes wait for the vectors (the async lane packs them
    with other requests' within its batch timeout)."""
    fd = door(request)
    key = await fd.keys.principal(request)
    if fd.shedder is not None and request.headers.get(H_LANE) != "async":
        fd.shedder.check()  # before parsing: a refusal must cost little CPU
    data, origin = to_embedding_request(await read_json(request), request.headers,
                                        team=key.team, org=key.org, key_id=key.id)
    # A key bound to features or users bills only those; its lanes, allow-list and own
    # limits hold: the chat door's functions, so the two doors cannot drift apart.
    bill_as_key_allows(key, data, request.headers)
    apply_key_policy(key, data)
    data.setdefault("request_id", uuid.uuid4().hex)
    data["timeout_s"] = fd.deadline_for(data["lane"], data.get("timeout_s")) or \
        fd.timeout_for(data["lane"])
    result = await run_in_threadpool(functools.partial(_embed, fd, data, origin))
    return JSONResponse(render(result, data.get("encoding_format", "float")),
                        headers=headers_of(result))


def _embed(fd: FrontDoor, data: dict[str, object], origin: dict[str, str]) -> EmbeddingResult:
    """Submit and wait (blocking: runs in a worker thread)."""
    try:
        handle = fd.gateway.submit_embedding(data)
    except ValidationError as err:
        # Name the parameter (or header) the client sent, not our internal field.
        err.field = err.details["field"] = param_for(err.field, origin)
        raise
    lane = str(data.get("lane", "interactive"))
    timeout = data.get("timeout_s")
    result: EmbeddingResult = handle.result(timeout=fd.timeout_for(
        lane, float(timeout) if isinstance(timeout, (int, float)) else None))
    return result


embeddings = guarded(_embeddings)
