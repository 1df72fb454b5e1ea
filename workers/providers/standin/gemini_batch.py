"""Gemini API embedding batches: ``models/{m}:asyncBatchEmbedContent``, ``batches[/{id}]``, cancel.

As the OpenAI and Anthropic batches (batch_api.py), every request is answered at creation and
the batch reads as succeeded once ``x-standin-batch-delay-s`` (or the config's
``batch_delay_s``) has passed; a cancel before then ends it unanswered and unbilled. Answers are
inlined (``inlinedEmbedContentResponses``) and carry no token count, as Gemini's embeddings do.
Batches are Operations as the SDK reads them: ``{name, metadata: {displayName, state, ...}}``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text
from workers.providers.standin.batch_api import _delay, _ended
from workers.providers.standin.batch_jobs import BatchJob, Outcome, book, cancel_outcomes
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.faults import fault_response
from workers.providers.standin.gemini_embed import MAX_BATCH, _one, _vector
from workers.providers.standin.pipeline import _fault
from workers.providers.standin.state import StandInState

_FAMILY = "gemini"
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"


async def create(request: Request, state: StandInState, body: dict[str, Any],
                 spec: ModelSpec) -> Response:
    """``POST models/{m}:asyncBatchEmbedContent`` with inlined requests."""
    if spec.kind != "embedding" or spec.embedding is None:
        raise RequestInvalid(f"models/{spec.name} is not supported for "
                             "asyncBatchEmbedContent.", status=404)
    fault = _fault(request, state, spec.name, _FAMILY)
    if fault is not None and fault.kind not in ("timeout", "slow", "cut"):
        state.faults_injected += 1
        return fault_response(fault, _FAMILY)
    batch = body.get("batch")
    config = batch.get("inputConfig") if isinstance(batch, dict) else None
    inner = (config or {}).get("requests") if isinstance(config, dict) else None
    requests = inner.get("requests") if isinstance(inner, dict) else None
    if not isinstance(requests, list) or not requests:
        raise RequestInvalid("* batch.input_config.requests.requests: must not be empty")
    if len(requests) > MAX_BATCH * 10:
        raise RequestInvalid("* batch.input_config.requests: too many inlined requests")
    outcomes = []
    state.record_model(spec.name)
    for i, entry in enumerate(requests):
        req = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(req, dict):
            raise RequestInvalid(f"* batch.input_config.requests.requests[{i}].request: "
                                 "not an object")
        text, dims = _one(req, spec, f"requests[{i}].request.")
        tokens = count_text(text)
        state.record_usage(tokens, 0, CacheUsage())
        outcomes.append(Outcome(str(i), body={"embedding": {"values": _vector(spec, text, dims)}},
                                billed=(tokens, 0, CacheUsage())))
    state.record_body(_FAMILY, {**body, "model": spec.name})
    now = state.config.clock()
    shown = str(batch.get("displayName") or "") if isinstance(batch, dict) else ""
    job = BatchJob(id=f"batches/{uuid.uuid4().hex[:20]}", family=_FAMILY, created=now,
                   ready_at=now + _delay(request, state), outcomes=outcomes,
                   request={"displayName": shown, "model": f"models/{spec.name}",
                            "at": _iso(datetime.now(timezone.utc))})
    book(request.app.state).jobs[job.id] = job
    if state.config.batch_create_delay_s > 0:  # the batch exists (and bills) from here on
        await asyncio.sleep(state.config.batch_create_delay_s)
    return JSONResponse(_operation(state, job, created=True))


async def one(request: Request, state: StandInState, target: str) -> Response:
    """``GET batches/{id}``, or ``POST batches/{id}:cancel``."""
    name, _, verb = target.partition(":")
    job = book(request.app.state).jobs.get(f"batches/{name}")
    if job is None or job.family != _FAMILY:
        raise RequestInvalid(f"Batch batches/{name} not found.", status=404)
    if request.method == "POST":
        if verb != "cancel":
            raise RequestInvalid(f"unknown method {verb!r}", status=404)
        if not _ended(state, job):
            cancel_outcomes(state, job)  # nothing answered yet: nothing of it is billed
        return JSONResponse({})
    return JSONResponse(_operation(state, job))


async def listing(request: Request, state: StandInState) -> Response:
    """``GET batches``: newest first, ``pageSize`` a page, ``pageToken`` where to go on."""
    jobs = sorted((j for j in book(request.app.state).jobs.values() if j.family == _FAMILY),
                  key=lambda j: j.created, reverse=True)
    try:
        size = int(request.query_params.get("pageSize", "50"))
        start = int(request.query_params.get("pageToken") or 0)
    except ValueError:
        raise RequestInvalid("pageSize and pageToken must be integers") from None
    if not 1 <= size <= 1000:
        raise RequestInvalid("pageSize must be from 1 to 1000")
    page = jobs[start:start + size]
    out: dict[str, Any] = {"operations": [_operation(state, j) for j in page]}
    if start + size < len(jobs):
        out["nextPageToken"] = str(start + size)
    return JSONResponse(out)


def _operation(state: StandInState, job: BatchJob, *, created: bool = False) -> dict[str, Any]:
    ended = not created and _ended(state, job)
    made = str(job.request.get("at"))
    if not ended:
        phase = "BATCH_STATE_PENDING" if created else "BATCH_STATE_RUNNING"
    else:
        phase = "BATCH_STATE_CANCELLED" if job.cancelled else "BATCH_STATE_SUCCEEDED"
    meta: dict[str, Any] = {"@type": _TYPE, "model": job.request.get("model"),
                            "displayName": job.request.get("displayName"),
                            "createTime": made, "updateTime": made, "state": phase,
                            "batchStats": {"requestCount": str(len(job.outcomes))}}
    if ended:
        meta["endTime"] = _iso(datetime.now(timezone.utc))
    if ended and not job.cancelled:
        meta["output"] = {"inlinedEmbedContentResponses": {"inlinedResponses": [
            {"response": o.body} if o.body is not None else
            {"error": {"code": o.status, "message": o.message}} for o in job.outcomes]}}
    return {"name": job.id, "metadata": meta, "done": ended}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
