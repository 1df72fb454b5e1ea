"""``POST /v1/chat/completions``, ``GET /v1/jobs/{id}``, ``GET /v1/models``: the model endpoints."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.errors import Cancelled, SluiceError, ValidationError
from models.domain.request import TIER_POLICIES, ChatRequest
from models.domain.result import ChatResult
from queues.envelope import ok_reply
from queues.handle import Handle, ReadyHandle, decode_reply
from queues.http.auth import AuthError, acting_org, bill_as_key_allows
from queues.http.context import FrontDoor
from queues.http.errors import error_response, sluice_error_response
from queues.http.flight import Flight
from queues.http.jobs import job_key
from queues.http.relay import Relay
from queues.http.stream import stream_response
from queues.http.translate import (H_LANE, completion_body, param_for, sluice_headers,
                                   stream_mode, to_request)
from queues.http.waiter import Watch

#: Bodies past this are refused before parsing (a prompt that large fits no model anyway).
MAX_BODY_BYTES = 16 * 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


def door(request: Request) -> FrontDoor:
    """The front door of the app serving ``request``."""
    found: FrontDoor = request.app.state.door
    return found


def guarded(handler: Endpoint) -> Endpoint:
    """Turn our typed errors into OpenAI-shaped responses."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthError as err:
            return error_response(err.status, err.message, code=err.code, param=err.param)
        except SluiceError as err:
            param = getattr(err, "field", None)
            return sluice_error_response(err, param=param if isinstance(param, str) else None)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object body, or a ValidationError a client can act on."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ValidationError(f"the body is larger than {MAX_BODY_BYTES} bytes", field="body")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"the body is larger than {MAX_BODY_BYTES} bytes", field="body")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        # Lone surrogates parse, but could never be sent on as UTF-8: refuse them here.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError):
        raise ValidationError("We could not parse the JSON body of your request: send valid "
                              "UTF-8 JSON (no NaN or Infinity)", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@guarded
async def chat_completions(request: Request) -> Response:
    """Run one chat completion through the pipeline; async-lane requests get a job to poll."""
    fd = door(request)
    key = await fd.keys.principal(request)
    if fd.shedder is not None and request.headers.get(H_LANE) != "async":
        # Refuse before reading and parsing the body: when overloaded, the CPU a refusal costs
        # is CPU the workers do not get (a cache hit is refused too while this holds).
        fd.shedder.check()
    body = await read_json(request)
    data, origin = to_request(body, request.headers, team=key.team, org=key.org, key_id=key.id)
    bill_as_key_allows(key, data, request.headers)
    stream, include_usage = stream_mode(body)
    fresh = "request_id" not in data  # minted here: no earlier run can have answered it
    data.setdefault("request_id", uuid.uuid4().hex)
    if data["lane"] != "async":
        data["timeout_s"] = fd.deadline_for(data["lane"], data.get("timeout_s"))
        if stream:
            return await _stream(fd, data, origin, fresh=fresh, include_usage=include_usage)
        return completion_response(await _answer(fd, data, origin, fresh=fresh))
    if stream:
        raise ValidationError("stream=true needs the interactive lane: an async-lane request "
                              "is answered at once with a job to poll; drop stream, or the "
                              f"{H_LANE}: async header", field="stream")
    handle, _ = await _submit(fd, data, origin, watch=False)
    record: dict[str, Any] = {"team": key.team, "org": key.org,
                              "task_id": getattr(handle, "task_id", handle.request_id)}
    if isinstance(handle, ReadyHandle):  # answered from the response cache: nothing queued
        record["reply"] = ok_reply(handle.result())
    await fd.jobs.put(job_key(handle.request_id, key.org, key.team), record)
    return JSONResponse(job_body(handle.request_id, "completed" if "reply" in record else "queued"),
                        status_code=202, headers={"x-sluice-request-id": handle.request_id,
                                                  "location": f"/v1/jobs/{handle.request_id}"})


async def _submit(fd: FrontDoor, data: dict[str, Any], origin: dict[str, str], *, watch: bool,
                  admit: Callable[[ChatRequest], None] | None = None, fresh: bool = False,
                  stream: bool = False) -> tuple[Handle, Watch | None]:
    """The producer pipeline in a worker thread; validation errors name the client's param."""
    try:
        return await run_in_threadpool(functools.partial(
            fd.submit, data, asyncio.get_running_loop(), watch, admit, fresh=fresh,
            stream=stream))
    except ValidationError as err:
        # Name the OpenAI parameter (or header) the client sent, not our internal field.
        err.field = err.details["field"] = param_for(err.field, origin)
        raise


async def _answer(fd: FrontDoor, data: dict[str, Any], origin: dict[str, str], *,
                  fresh: bool = False) -> ChatResult:
    """An interactive request: submit and wait for its result, counted in flight meanwhile."""
    flight = Flight(fd.shedder)
    try:
        _, watch = await _submit(fd, data, origin, watch=True, fresh=fresh, admit=flight.admit)
        assert watch is not None
        return await flight.wait(fd.waiter, watch, fd.timeout_for(data["lane"],
                                                                  data.get("timeout_s")))
    finally:
        flight.end()


async def _stream(fd: FrontDoor, data: dict[str, Any], origin: dict[str, str], *,
                  fresh: bool, include_usage: bool) -> Response:
    """``stream=true``: the worker's pieces relayed as they come (queues/http/relay.py); an
    answer that arrives whole (a cache hit; no Redis; a self-hosted model) is sent whole."""
    if fd.tokens is None:  # no Redis to relay through: workers answer whole
        result = await _answer(fd, data, origin, fresh=fresh)
        return stream_response(result, include_usage=include_usage)
    flight = Flight(fd.shedder)
    timeout = fd.timeout_for(data["lane"], data.get("timeout_s"))
    try:
        handle, watch = await _submit(fd, data, origin, watch=True, fresh=fresh,
                                      admit=flight.admit, stream=True)
        assert watch is not None
    except BaseException:
        flight.end()
        raise
    task_id = getattr(handle, "task_id", None)
    if task_id is None:  # answered from the response cache
        try:
            result = await flight.wait(fd.waiter, watch, timeout)
        finally:
            flight.end()
        return stream_response(result, include_usage=include_usage)
    relay = Relay(fd.tokens, fd.waiter, task_id, watch, timeout, flight)
    return await relay.start(handle.request_id, getattr(handle, "model", "") or data["model"],
                             include_usage)


def completion_response(result: ChatResult) -> Response:
    """A ``chat.completion`` with the ``x-sluice-*`` headers."""
    return JSONResponse(completion_body(result), headers=sluice_headers(result))


def job_body(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """The ``sluice.job`` object."""
    return {"id": job_id, "object": "sluice.job", "status": status,
            "poll": f"/v1/jobs/{job_id}", **extra}


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
    if isinstance(outcome, ChatResult):
        return JSONResponse(job_body(job_id, "completed", result=completion_body(outcome)),
                            headers=sluice_headers(outcome))
    if isinstance(outcome, SluiceError):
        err = json.loads(sluice_error_response(outcome).body)["error"]
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
    if await run_in_threadpool(fd.started, job_id, record["org"], record["team"]):
        return _started(job_id)
    # The mark and the worker's start race for one Redis key: the loser is told (a worker
    # that claimed it since the ledger read above wins, and the job runs and is billed).
    if not await run_in_threadpool(fd.gateway.cancel, record.get("task_id", job_id)):
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
