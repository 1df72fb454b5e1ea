"""The one submit-and-answer path every door shares: key, shedding, parse, submit, answer.

A door is a wire format (``queues/http/wire``) passed to :func:`door_endpoint`; the shedder,
the deadline, the result waiter, the streaming relay and the async-job record live here
once, so no door copies them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.errors import SluiceError, ValidationError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult
from queues.envelope import ok_reply
from queues.handle import Handle, ReadyHandle
from queues.http.auth import AuthError, apply_key_policy, bill_as_key_allows
from queues.http.context import FrontDoor
from queues.http.errors import Problem, problem_of
from queues.http.flight import Flight
from queues.http.jobs import job_key
from queues.http.relay import Relay
from queues.http.stream import settled_response
from queues.http.waiter import Watch
from queues.http.wire.base import Parsed, Wire
from queues.http.wire.common import H_LANE, param_for, sluice_headers
from queues.http.wire.openai_chat import OpenAIChat

#: Bodies past this are refused before parsing (a prompt that large fits no model anyway).
MAX_BODY_BYTES = 16 * 1024 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]
OPENAI_CHAT = OpenAIChat()


def door(request: Request) -> FrontDoor:
    """The front door of the app serving ``request``."""
    found: FrontDoor = request.app.state.door
    return found


def guarded(handler: Endpoint, wire: Wire = OPENAI_CHAT) -> Endpoint:
    """Turn our typed errors into error responses of ``wire``'s shape."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthError as err:
            return wire.error(Problem(err.status, err.message, param=err.param, code=err.code))
        except SluiceError as err:
            param = getattr(err, "field", None)
            return wire.error(problem_of(err, param=param if isinstance(param, str) else None))

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
        if _may_hold_surrogates(raw):
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError):
        raise ValidationError("We could not parse the JSON body of your request: send valid "
                              "UTF-8 JSON (no NaN or Infinity)", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    return body


#: A ``\\uD800``-``\\uDFFF`` escape: the only way a strict UTF-8 JSON text holds a surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _may_hold_surrogates(raw: bytes) -> bool:
    """Whether the parsed ``raw`` can hold a surrogate (then it is re-encoded to find a lone
    one): a body that is strict UTF-8 (which refuses encoded surrogates) with no surrogate
    escape cannot, and skips re-encoding the whole body (a 12,000-token agent prompt: the
    front door's dearest step)."""
    if json.detect_encoding(raw) != "utf-8":
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return _SURROGATE_ESCAPE.search(raw) is not None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def door_endpoint(wire: Wire) -> Endpoint:
    """The endpoint of a door speaking ``wire``: every request through the same pipeline."""

    async def serve(request: Request) -> Response:
        fd = door(request)
        key = await fd.keys.principal(request)
        if fd.shedder is not None and request.headers.get(H_LANE) != "async":
            # Refuse before reading and parsing the body: when overloaded, the CPU a refusal
            # costs is CPU the workers do not get (a cache hit is refused too while this holds).
            fd.shedder.check()
        parsed = wire.parse(await read_json(request), request.headers, key)
        # What the key may bill (its features and users): a 403 naming the header otherwise.
        bill_as_key_allows(key, parsed.data, request.headers)
        apply_key_policy(key, parsed.data)  # its lanes, its allow-list, its own limits
        data = parsed.data
        fresh = "request_id" not in data  # minted here: no earlier run can have answered it
        data.setdefault("request_id", uuid.uuid4().hex)
        prepare = getattr(wire, "prepare", None)
        if prepare is not None:  # a door's own step before submitting (stored responses)
            await prepare(fd, parsed, key)
        if data["lane"] != "async":
            data["timeout_s"] = fd.deadline_for(data["lane"], data.get("timeout_s"))
            if parsed.stream:
                return await _stream(fd, wire, parsed, fresh=fresh)
            result = await _answer(fd, parsed, fresh=fresh)
            finish = getattr(wire, "finish", None)  # a door that keeps its answers
            body = await finish(fd, parsed, result) if finish is not None else \
                wire.render(result)
            return JSONResponse(body, headers=sluice_headers(result))
        if parsed.stream:
            raise ValidationError("stream=true needs the interactive lane: an async-lane "
                                  "request is answered at once with a job to poll; drop "
                                  f"stream, or the {H_LANE}: async header", field="stream")
        return await _job(fd, wire, parsed, key)

    serve.__name__ = f"{wire.name}_door"
    serve.__doc__ = f"Run one {wire.name} request through the pipeline; async-lane requests " \
                    "get a job to poll."
    return guarded(serve, wire)


async def _job(fd: FrontDoor, wire: Wire, parsed: Parsed, key: Any) -> Response:
    """An async-lane request: queued (or answered from the cache), with a job to poll."""
    handle, _ = await _submit(fd, parsed, watch=False)
    record: dict[str, Any] = {"team": key.team, "org": key.org, "wire": wire.name,
                              "task_id": getattr(handle, "task_id", handle.request_id)}
    if isinstance(handle, ReadyHandle):  # answered from the response cache: nothing queued
        record["reply"] = ok_reply(handle.result())
    await fd.jobs.put(job_key(handle.request_id, key.org, key.team), record)
    return JSONResponse(job_body(handle.request_id, "completed" if "reply" in record
                                 else "queued"),
                        status_code=202, headers={"x-sluice-request-id": handle.request_id,
                                                  "location": f"/v1/jobs/{handle.request_id}"})


def job_body(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """The ``sluice.job`` object."""
    return {"id": job_id, "object": "sluice.job", "status": status,
            "poll": f"/v1/jobs/{job_id}", **extra}


async def _submit(fd: FrontDoor, parsed: Parsed, *, watch: bool,
                  admit: Callable[[ChatRequest], None] | None = None, fresh: bool = False,
                  stream: bool = False) -> tuple[Handle, Watch | None]:
    """The producer pipeline in a worker thread; validation errors name the client's param."""
    try:
        return await run_in_threadpool(functools.partial(
            fd.submit, parsed.data, asyncio.get_running_loop(), watch, admit, fresh=fresh,
            stream=stream))
    except ValidationError as err:
        # Name the door's parameter (or header) the client sent, not our internal field.
        err.field = err.details["field"] = param_for(err.field, parsed.origin)
        raise


async def _answer(fd: FrontDoor, parsed: Parsed, *, fresh: bool = False) -> ChatResult:
    """An interactive request: submit and wait for its result, counted in flight meanwhile."""
    data = parsed.data
    flight = Flight(fd.shedder)
    try:
        _, watch = await _submit(fd, parsed, watch=True, fresh=fresh, admit=flight.admit)
        assert watch is not None
        return await flight.wait(fd.waiter, watch, fd.timeout_for(data["lane"],
                                                                  data.get("timeout_s")))
    finally:
        flight.end()


async def _stream(fd: FrontDoor, wire: Wire, parsed: Parsed, *, fresh: bool) -> Response:
    """A streamed answer: the worker's pieces relayed as they come (queues/http/relay.py); an
    answer that arrives whole (a cache hit; no Redis; a self-hosted model) is sent whole."""
    data = parsed.data
    if fd.tokens is None:  # no Redis to relay through: workers answer whole
        result = await _answer(fd, parsed, fresh=fresh)
        return await settled_response(result, wire.encoder(result.request_id, result.model,
                                                           parsed))
    flight = Flight(fd.shedder)
    timeout = fd.timeout_for(data["lane"], data.get("timeout_s"))
    try:
        handle, watch = await _submit(fd, parsed, watch=True, fresh=fresh,
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
        return await settled_response(result, wire.encoder(result.request_id, result.model,
                                                           parsed))
    relay = Relay(fd.tokens, fd.waiter, task_id, watch, timeout, flight)
    model = getattr(handle, "model", "") or data["model"]
    return await relay.start(handle.request_id, wire.encoder(handle.request_id, model, parsed))
