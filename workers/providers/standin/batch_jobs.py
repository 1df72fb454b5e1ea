"""Batch jobs of the stand-in: each request answered like a single call, released after a delay."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from workers.providers.standin import anthropic_api, openai_api
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.pipeline import Answer, Answerer
from workers.providers.standin.state import StandInState

#: The only endpoint the stand-in's OpenAI Batch accepts (what sluicegate sends).
OPENAI_ENDPOINT = "/v1/chat/completions"


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> dict[str, Any]:
        """OpenAI's ``file`` object."""
        return {"id": self.id, "object": "file", "bytes": len(self.content),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "status_details": None}


@dataclass
class Outcome:
    """One batched request's end: a reply body, or an error status and message."""

    custom_id: str
    body: dict[str, Any] | None = None
    status: int = 200
    message: str = ""
    #: What answering it billed (prompt, output, cache), taken back if the batch is cancelled.
    billed: tuple[int, int, CacheUsage] | None = None
    #: Cancelled before it was answered: no answer, not billed.
    cancelled: bool = False


def cancel_outcomes(state: StandInState, job: BatchJob) -> None:
    """Cancel a batch still in progress: every request ends unanswered and unbilled (the
    stand-in answers at creation, so it models a cancel that reached each request first)."""
    job.cancelled = True
    for o in job.outcomes:
        if o.billed is not None:
            prompt, output, cache = o.billed
            state.record_usage(-prompt, -output, CacheUsage(-cache.read, -cache.write_5m,
                                                            -cache.write_1h))
        o.body, o.billed, o.cancelled = None, None, True
        o.status, o.message = 0, "the batch was cancelled before this request was processed"


@dataclass
class BatchJob:
    """A batch: answered at creation, visible as finished once ``ready_at`` has passed."""

    id: str
    family: str
    created: float
    ready_at: float
    outcomes: list[Outcome]
    request: dict[str, Any] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancelled: bool = False


class BatchBook:
    """Files and batches of one stand-in app (touched only from its event loop)."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, BatchJob] = {}

    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Keep an uploaded file."""
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content)
        self.files[stored.id] = stored
        return stored


def book(app_state: Any) -> BatchBook:
    """The batch book of an app, created on first use."""
    found: BatchBook | None = getattr(app_state, "standin_batches", None)
    if found is None:
        found = BatchBook()
        app_state.standin_batches = found
    return found


#: OpenAI endpoints a batch may target, and the single-call answer of each.
OPENAI_ENDPOINTS = (OPENAI_ENDPOINT, "/v1/embeddings", "/v1/responses")


def run_one(state: StandInState, family: str, custom_id: str, body: Any, key: str,
            endpoint: str = OPENAI_ENDPOINT) -> Outcome:
    """Answer one batched request as the single-call endpoint would (faults included)."""
    answer: Answerer = openai_api.answer if family == "openai" else anthropic_api.answer
    if endpoint == "/v1/embeddings":
        from workers.providers.standin import embeddings_api

        answer = embeddings_api.answer
    elif endpoint == "/v1/responses":
        from workers.providers.standin import responses_api

        answer = responses_api.answer
    if not isinstance(body, dict):
        return Outcome(custom_id, status=400, message="the request body must be a JSON object")
    state.record_body(family, body)  # as a single call's: tests read what a batch carried
    spec = state.model(body.get("model"), family)
    if spec is None:
        return Outcome(custom_id, status=404,
                       message=f"model: {body.get('model')!r} does not exist")
    state.record_model(spec.name)
    fault = state.faults.take(spec.name, family)
    if fault is not None and fault.kind == "status":
        state.faults_injected += 1
        state.record_status(fault.status)
        return Outcome(custom_id, status=fault.status,
                       message=f"Error {fault.status} (injected by the stand-in).")
    try:
        result: Answer = answer(state, body, spec, key)
    except RequestInvalid as exc:
        state.record_status(exc.status)
        return Outcome(custom_id, status=exc.status, message=exc.message)
    state.record_status(200)
    state.record_usage(result.prompt_tokens, result.output_tokens, result.cache)
    return Outcome(custom_id, body=result.payload,
                   billed=(result.prompt_tokens, result.output_tokens, result.cache))


def parse_openai_input(content: bytes, endpoint: str = OPENAI_ENDPOINT
                       ) -> list[tuple[str, Any]]:
    """``(custom_id, body)`` of each JSONL line; RequestInvalid names the first bad line."""
    items: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise RequestInvalid(f"line {number}: not valid JSON") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("custom_id"), str):
            raise RequestInvalid(f"line {number}: each line needs a string custom_id")
        if entry.get("url") != endpoint or entry.get("method", "POST") != "POST":
            raise RequestInvalid(f"line {number}: url must be {endpoint} (POST), the batch's "
                                 "endpoint")
        if entry["custom_id"] in seen:
            raise RequestInvalid(f"line {number}: duplicate custom_id {entry['custom_id']!r}")
        seen.add(entry["custom_id"])
        items.append((entry["custom_id"], entry.get("body")))
    if not items:
        raise RequestInvalid("the input file holds no requests")
    return items


def openai_output_files(job: BatchJob, books: BatchBook) -> None:
    """Write the output and error JSONL files of a finished OpenAI batch (once)."""
    if job.output_file_id is not None or job.error_file_id is not None:
        return
    ok, failed = [], []
    for o in job.outcomes:
        rid = uuid.uuid4().hex
        if o.cancelled:
            failed.append(json.dumps({"id": f"batch_req_{rid[:24]}", "custom_id": o.custom_id,
                                      "response": None, "error": {"code": "batch_cancelled",
                                                                  "message": o.message}}))
        elif o.body is not None:
            line = {"id": f"batch_req_{rid[:24]}", "custom_id": o.custom_id, "error": None,
                    "response": {"status_code": 200, "request_id": rid, "body": o.body}}
            ok.append(json.dumps(line))
        else:
            err = {"message": o.message, "type": "invalid_request_error" if o.status < 500
                   else "server_error", "param": None, "code": None}
            line = {"id": f"batch_req_{rid[:24]}", "custom_id": o.custom_id, "error": None,
                    "response": {"status_code": o.status, "request_id": rid,
                                 "body": {"error": err}}}
            failed.append(json.dumps(line))
    if ok:
        job.output_file_id = books.add_file(f"{job.id}_output.jsonl", "batch_output",
                                            ("\n".join(ok) + "\n").encode()).id
    if failed:
        job.error_file_id = books.add_file(f"{job.id}_error.jsonl", "batch_output",
                                           ("\n".join(failed) + "\n").encode()).id


def anthropic_result_line(o: Outcome) -> dict[str, Any]:
    """One line of an Anthropic Message Batch's results file."""
    if o.cancelled:
        return {"custom_id": o.custom_id, "result": {"type": "canceled"}}
    if o.body is not None:
        return {"custom_id": o.custom_id, "result": {"type": "succeeded", "message": o.body}}
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(o.status, "api_error")
    return {"custom_id": o.custom_id, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": kind, "message": o.message}}}}
