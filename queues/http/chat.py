"""``GET /v1/jobs/{id}``, ``DELETE /v1/jobs/{id}``, ``GET /v1/models``: what the doors share
beside the pipeline (``queues/http/pipeline.py``); the doors themselves are in ``doors.py``."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.errors import Cancelled, SluiceError
from models.domain.request import TIER_POLICIES
from models.domain.result import ChatResult
from queues.handle import decode_reply
from queues.http.auth import acting_org
from queues.http.context import FrontDoor
from queues.http.doors import wire_named
from queues.http.errors import error_response, problem_of
from queues.http.jobs import job_key, waiting_in_batch
from queues.http.pipeline import door, guarded, job_body
from queues.http.wire.common import sluice_headers


async def _job(request: Request) -> tuple[FrontDoor, str, dict[str, Any] | None]:
    """The door, the job id and its record: None unless it is the key's team's job. An
    operator key names another team of its org with ``?team=`` (and, deployment-wide, another
    org with ``?org=``)."""
    fd = door(request)
    key = await fd.keys.principal(request)
    job_id = request.path_params["job_id"]
    org, team = key.org, key.team
    if key.is_operator:
        org = acting_org(key, request.query_params.get("org"))
        team = request.query_params.get("team") or team
    record = await fd.jobs.get(job_key(job_id, org, team))
    if record is None:  # a record written by the previous release, under the bare id
        record = await fd.jobs.get(job_id)
    if record is None or (record.get("team"), record.get("org")) != (team, org):
        return fd, job_id, None
    return fd, job_id, record


def _no_job(job_id: str) -> Response:
    return error_response(404, f"no job {job_id!r} for this key's team (jobs are kept as long "
                          "as task results, SLUICE_BROKER__RESULT_EXPIRES)", param="job_id",
                          code="job_not_found")


async def _outcome(fd: FrontDoor, job_id: str, record: dict[str, Any]
                   ) -> tuple[str, ChatResult | SluiceError | None]:
    """``(state, outcome)`` of a job: its cached answer, else what the result store holds."""
    if record.get("reply"):
        return "SUCCESS", decode_reply(record["reply"])
    return await run_in_threadpool(fd.job_outcome, record.get("task_id", job_id))


@guarded
async def get_job(request: Request) -> Response:
    """Where an async-lane job stands, and its completion once done (its team only)."""
    fd, job_id, record = await _job(request)
    if record is None:
        return _no_job(job_id)
    state, outcome = await _outcome(fd, job_id, record)
    wire = wire_named(record.get("wire"))
    if isinstance(outcome, ChatResult):  # in the format of the door that took the job
        return JSONResponse(job_body(job_id, "completed", result=wire.render(outcome)),
                            headers=sluice_headers(outcome))
    if isinstance(outcome, SluiceError):
        err = json.loads(bytes(wire.error(problem_of(outcome)).body))["error"]
        status = "cancelled" if outcome.code == Cancelled.code else "failed"
        return JSONResponse(job_body(job_id, status, error=err))
    # Celery does not track STARTED here (one more write per task): a worker's claim, the
    # ledger row, says the job runs; a cancel mark on a job not yet claimed, that it will not.
    if state in ("STARTED", "RETRY") or await run_in_threadpool(fd.started, job_id,
                                                                  record["org"], record["team"]):
        return JSONResponse(job_body(job_id, "running"))
    cancelling = await run_in_threadpool(fd.cancelling, record.get("task_id", job_id))
    return JSONResponse(job_body(job_id, "cancelling" if cancelling else "queued"))


@guarded
async def cancel_job(request: Request) -> Response:
    """Cancel a queued job (its team only): 202 ``cancelling``; the worker that reaches it
    drops it at $0 and releases its reservation, unless it had already started."""
    fd, job_id, record = await _job(request)
    if record is None:
        return _no_job(job_id)
    if fd.gateway.cancels is None:
        return error_response(501, "cancelling jobs needs a Redis broker "
                              "(SLUICE_BROKER__URL=redis://...)", code="not_supported")
    _, outcome = await _outcome(fd, job_id, record)
    if outcome is not None:
        done = "failed" if isinstance(outcome, SluiceError) else "completed"
        return error_response(409, f"job {job_id} has already {done}: there is nothing left "
                              f"to cancel; GET /v1/jobs/{job_id} shows its outcome",
                              param="job_id", code="job_finished", retry=False)
    task_id = record.get("task_id", job_id)
    # A job waiting in a provider batch has started, and can still be cancelled (its worker
    # cancels the batch at the provider once all its callers have): Gateway.cancel asks that.
    if (await run_in_threadpool(fd.started, job_id, record["org"], record["team"])
            and not await run_in_threadpool(waiting_in_batch, fd.gateway.cancels, task_id)):
        return _started(job_id)
    # The mark and the worker's start race for one Redis key: the loser is told (a worker
    # that claimed it since the ledger read above wins, and the job runs and is billed).
    if not await run_in_threadpool(fd.gateway.cancel, task_id):
        return _started(job_id)
    return JSONResponse(job_body(job_id, "cancelling"), status_code=202)


def _started(job_id: str) -> Response:
    return error_response(409, f"job {job_id} has already started: a worker is running it and "
                          f"it will be billed; GET /v1/jobs/{job_id} shows its outcome",
                          param="job_id", code="job_started", retry=False)


@guarded
async def list_models(request: Request) -> Response:
    """Model policies and catalogue models, in OpenAI's ``list`` shape."""
    fd = door(request)
    await fd.keys.principal(request)
    data = [{"id": p, "object": "model", "created": 0, "owned_by": "sluicegate"}
            for p in TIER_POLICIES]
    data += [{"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}
             for m in fd.catalogue.models.values()]
    return JSONResponse({"object": "list", "data": data})
