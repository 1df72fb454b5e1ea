"""Batch wire formats: OpenAI files + ``/v1/batches``, Anthropic ``/v1/messages/batches``.

Requests are answered when the batch is created (faults and prompt caching included) and the
batch reads as finished once ``x-standin-batch-delay-s`` has passed (without the header, the
config's ``batch_delay_s``, 0 by default), so clients see the real lifecycle: created in
progress, polled, then results.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workers.providers.standin.anthropic_api import api_key as anthropic_key
from workers.providers.standin.batch_jobs import (OPENAI_ENDPOINTS, BatchJob,
                                                  anthropic_result_line, book, cancel_outcomes,
                                                  openai_output_files, parse_openai_input,
                                                  run_one)
from workers.providers.standin.errors import RequestInvalid, provider_error
from workers.providers.standin.openai_api import bearer_key
from workers.providers.standin.state import StandInState

DELAY_HEADER = "x-standin-batch-delay-s"
#: What ``GET /v1/batches`` (the list) counts as in ``stats()["by_path"]``, apart from creates.
LIST_PATH = "/v1/batches:list"
_WINDOW_S = 24 * 3600


def batch_routes() -> list[Route]:
    """The routes to add to the stand-in app."""
    return [
        Route("/v1/files", _guard("openai", upload_file), methods=["POST"]),
        Route("/v1/files/{file_id}", _guard("openai", get_file), methods=["GET"]),
        Route("/v1/files/{file_id}/content", _guard("openai", file_content), methods=["GET"]),
        Route("/v1/batches", _guard("openai", create_openai), methods=["POST"]),
        Route("/v1/batches", _guard("openai", list_openai, path=LIST_PATH), methods=["GET"]),
        Route("/v1/batches/{batch_id}", _guard("openai", get_openai), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", _guard("openai", cancel), methods=["POST"]),
        Route("/v1/messages/batches", _guard("anthropic", create_anthropic), methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}", _guard("anthropic", get_anthropic),
              methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}/results", _guard("anthropic", results_anthropic),
              methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}/cancel", _guard("anthropic", cancel),
              methods=["POST"]),
    ]


Handler = Callable[[Request, StandInState, str], Any]


def _guard(family: str, handler: Handler, path: str | None = None
           ) -> Callable[[Request], Any]:
    """Count the call (as ``path``, or its own), check the key, and turn RequestInvalid into
    the family's error shape."""

    async def endpoint(request: Request) -> Response:
        state: StandInState = request.app.state.standin
        state.record_request(path or request.url.path)
        try:
            key = bearer_key(request) if family == "openai" else anthropic_key(request)
            response: Response = await handler(request, state, key)
        except RequestInvalid as exc:
            response = provider_error(family, exc.status, exc.message, param=exc.param)
        response.headers["x-request-id" if family == "openai" else "request-id"] = uuid.uuid4().hex
        return response

    return endpoint


def _job(request: Request, family: str) -> BatchJob:
    job = book(request.app.state).jobs.get(request.path_params["batch_id"])
    if job is None or job.family != family:
        raise RequestInvalid(f"no batch {request.path_params['batch_id']!r}", status=404)
    return job


def _delay(request: Request, state: StandInState) -> float:
    raw = request.headers.get(DELAY_HEADER)
    if raw is None:
        return state.config.batch_delay_s
    try:
        return max(float(raw), 0.0)
    except ValueError:
        raise RequestInvalid(f"{DELAY_HEADER}: {raw!r} is not a number") from None


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise RequestInvalid("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestInvalid("the request body must be a JSON object")
    return body


def _ended(state: StandInState, job: BatchJob) -> bool:
    return job.cancelled or state.config.clock() >= job.ready_at


# --- OpenAI -------------------------------------------------------------------------------

async def upload_file(request: Request, state: StandInState, key: str) -> Response:
    """``POST /v1/files`` (multipart: ``purpose``, ``file``)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise RequestInvalid("files must be uploaded as multipart/form-data")
    # The stdlib's MIME parser reads form-data, so the stand-in needs no multipart package.
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + await request.body())
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    purpose = fields.get("purpose", (None, b""))[1].decode()
    if purpose != "batch":
        raise RequestInvalid("purpose: the stand-in stores only purpose='batch' files",
                             param="purpose")
    if "file" not in fields:
        raise RequestInvalid("file: a file part is required", param="file")
    filename, content = fields["file"]
    stored = book(request.app.state).add_file(filename or "upload.jsonl", purpose, content)
    return JSONResponse(stored.to_json())


async def get_file(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/files/{id}``."""
    stored = book(request.app.state).files.get(request.path_params["file_id"])
    if stored is None:
        raise RequestInvalid(f"no file {request.path_params['file_id']!r}", status=404)
    return JSONResponse(stored.to_json())


async def file_content(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/files/{id}/content``: the raw bytes."""
    stored = book(request.app.state).files.get(request.path_params["file_id"])
    if stored is None:
        raise RequestInvalid(f"no file {request.path_params['file_id']!r}", status=404)
    return Response(stored.content, media_type="application/octet-stream")


async def create_openai(request: Request, state: StandInState, key: str) -> Response:
    """``POST /v1/batches``: answer every line of the input file now, release later."""
    body = await _json(request)
    books = book(request.app.state)
    endpoint = body.get("endpoint")
    if endpoint not in OPENAI_ENDPOINTS:
        raise RequestInvalid(f"endpoint: the stand-in batches {', '.join(OPENAI_ENDPOINTS)}",
                             param="endpoint")
    if body.get("completion_window") != "24h":
        raise RequestInvalid("completion_window: must be '24h'", param="completion_window")
    source = books.files.get(str(body.get("input_file_id")))
    if source is None:
        raise RequestInvalid(f"input_file_id: no file {body.get('input_file_id')!r}",
                             param="input_file_id", status=404)
    items = parse_openai_input(source.content, str(endpoint))
    now = state.config.clock()
    job = BatchJob(id=f"batch_{uuid.uuid4().hex[:24]}", family="openai", created=now,
                   ready_at=now + _delay(request, state),
                   outcomes=[run_one(state, "openai", cid, b, key, str(endpoint))
                             for cid, b in items],
                   request=body)
    books.jobs[job.id] = job
    if state.config.batch_create_delay_s > 0:  # the batch exists (and bills) from here on
        await asyncio.sleep(state.config.batch_create_delay_s)
    return JSONResponse(_openai_batch(state, job, books, created=True))


async def list_openai(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/batches``: newest first, ``limit`` (1-100, default 20) a page, ``after`` an
    id to continue after (the SDK's ``batches.list`` pages through it)."""
    books = book(request.app.state)
    jobs = sorted((j for j in books.jobs.values() if j.family == "openai"),
                  key=lambda j: j.created, reverse=True)
    after = request.query_params.get("after")
    if after is not None:
        ids = [j.id for j in jobs]
        if after not in ids:
            raise RequestInvalid(f"after: no batch {after!r}", param="after", status=404)
        jobs = jobs[ids.index(after) + 1:]
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        raise RequestInvalid("limit must be an integer", param="limit") from None
    if not 1 <= limit <= 100:
        raise RequestInvalid("limit must be from 1 to 100", param="limit")
    page = [_openai_batch(state, j, books) for j in jobs[:limit]]
    return JSONResponse({"object": "list", "data": page,
                         "first_id": page[0]["id"] if page else None,
                         "last_id": page[-1]["id"] if page else None,
                         "has_more": len(jobs) > limit})


async def get_openai(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/batches/{id}``."""
    return JSONResponse(_openai_batch(state, _job(request, "openai"), book(request.app.state)))


async def cancel(request: Request, state: StandInState, key: str) -> Response:
    """``POST .../cancel`` of either family: unfinished requests end as cancelled."""
    family = "anthropic" if "/messages/" in request.url.path else "openai"
    job = _job(request, family)
    if not _ended(state, job):
        cancel_outcomes(state, job)  # nothing answered yet: nothing of it is billed
    if family == "openai":
        return JSONResponse(_openai_batch(state, job, book(request.app.state)))
    return JSONResponse(_anthropic_batch(request, state, job))


def _openai_batch(state: StandInState, job: BatchJob, books: Any, *,
                  created: bool = False) -> dict[str, Any]:
    ended = not created and _ended(state, job)
    if ended:
        openai_output_files(job, books)
    failed = sum(1 for o in job.outcomes if o.body is None)  # cancelled ones included
    stamp = int(datetime.now(timezone.utc).timestamp())
    status = ("cancelled" if job.cancelled else "completed") if ended else (
        "validating" if created else "in_progress")
    req = job.request
    return {
        "id": job.id, "object": "batch", "endpoint": req.get("endpoint"), "errors": None,
        "input_file_id": req.get("input_file_id"), "completion_window": "24h",
        "status": status, "output_file_id": job.output_file_id if ended else None,
        "error_file_id": job.error_file_id if ended else None, "created_at": stamp,
        "in_progress_at": None if created else stamp, "expires_at": stamp + _WINDOW_S,
        "finalizing_at": stamp if ended else None, "completed_at": stamp if ended else None,
        "failed_at": None, "expired_at": None, "cancelling_at": None,
        "cancelled_at": stamp if job.cancelled else None,
        "request_counts": {"total": len(job.outcomes),
                           "completed": len(job.outcomes) - failed if ended else 0,
                           "failed": failed if ended else 0},
        "metadata": req.get("metadata"),
    }


# --- Anthropic ----------------------------------------------------------------------------

async def create_anthropic(request: Request, state: StandInState, key: str) -> Response:
    """``POST /v1/messages/batches`` with inline ``requests``."""
    body = await _json(request)
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise RequestInvalid("requests: a non-empty array is required")
    seen: set[str] = set()
    for i, item in enumerate(requests):
        cid = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not 1 <= len(cid) <= 64 or cid in seen:
            raise RequestInvalid(f"requests.{i}.custom_id: a unique string of 1-64 characters")
        seen.add(cid)
    now = state.config.clock()
    job = BatchJob(id=f"msgbatch_{uuid.uuid4().hex[:24]}", family="anthropic", created=now,
                   ready_at=now + _delay(request, state),
                   outcomes=[run_one(state, "anthropic", r["custom_id"], r.get("params"), key)
                             for r in requests])
    book(request.app.state).jobs[job.id] = job
    return JSONResponse(_anthropic_batch(request, state, job, created=True))


async def get_anthropic(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/messages/batches/{id}``."""
    return JSONResponse(_anthropic_batch(request, state, _job(request, "anthropic")))


async def results_anthropic(request: Request, state: StandInState, key: str) -> Response:
    """``GET /v1/messages/batches/{id}/results``: JSONL, one line per request."""
    job = _job(request, "anthropic")
    if not _ended(state, job):
        raise RequestInvalid(f"batch {job.id} is still in progress; poll until it has ended")
    lines = [json.dumps(anthropic_result_line(o)) for o in job.outcomes]
    return Response(("\n".join(lines) + "\n").encode(), media_type="application/x-jsonl")


def _anthropic_batch(request: Request, state: StandInState, job: BatchJob, *,
                     created: bool = False) -> dict[str, Any]:
    ended = not created and _ended(state, job)
    ok = sum(1 for o in job.outcomes if o.body is not None)
    gone = sum(1 for o in job.outcomes if o.cancelled)
    now = datetime.now(timezone.utc)
    iso = now.isoformat().replace("+00:00", "Z")
    base = str(request.base_url).rstrip("/")
    return {
        "id": job.id, "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": {"processing": 0 if ended else len(job.outcomes),
                           "succeeded": ok if ended else 0,
                           "errored": len(job.outcomes) - ok - gone if ended else 0,
                           "canceled": gone if ended else 0, "expired": 0},
        "ended_at": iso if ended else None, "created_at": iso,
        "expires_at": (now + timedelta(seconds=_WINDOW_S)).isoformat().replace("+00:00", "Z"),
        "archived_at": None, "cancel_initiated_at": iso if job.cancelled else None,
        "results_url": f"{base}/v1/messages/batches/{job.id}/results" if ended else None,
    }
