"""The JSON message a producer puts on a queue and a worker takes off it."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.domain.errors import SluiceError
from models.domain.request import LATE_FIELDS, ChatRequest
from models.domain.result import ChatResult, Route

#: Bumped when the envelope changes shape, so old workers refuse new messages clearly.
ENVELOPE_VERSION = 1


class Envelope(BaseModel):
    """A request with its decided route, its reservation and when it was enqueued."""

    model_config = ConfigDict(frozen=True)

    v: int = ENVELOPE_VERSION
    request: ChatRequest
    route: Route
    prompt_tokens: int = 0
    reservation_id: str | None = None
    enqueued_at: float = Field(default_factory=time.time)
    prompt_hash: str = ""
    #: Epoch seconds after which a worker must not start the request (its caller gave up).
    deadline: float | None = None
    #: Write the answer's text as it is generated (the front door's ``stream=true``). Here,
    #: not on the request: workers of the previous release ignore unknown envelope fields
    #: (and answer whole), where they refuse unknown request fields.
    stream: bool = False
    #: The quality guard's pair this request belongs to (workers/shadow.py): a shadow carries
    #: the served answer it is judged against, a judge call its vote's position. None: a
    #: caller's request. Held in flight only, never stored.
    pair: dict[str, Any] | None = None
    #: The rate-limit windows admission added to (scheduler.ratelimit.Grant), so the worker
    #: corrects the token estimate to the tokens used. Old workers ignore it.
    rate_grant: dict[str, Any] | None = None
    #: An async request that met a full rate limit: queued with a countdown, admitted by the
    #: worker that takes it (and brought back again while the limit stays full).
    rate_wait: bool = False

    def to_message(self) -> dict[str, Any]:
        """JSON-safe form for the broker."""
        message = self.model_dump(mode="json")
        if message.get("pair") is None:
            message.pop("pair", None)
        # Workers of the previous release refuse unknown request fields: a field they do not
        # know is left out while unset, so a rolling deploy can put workers last.
        req = message["request"]
        for name in ("timeout_s", *LATE_FIELDS):
            # Unset is None (drop_params: False); a False or 0 the caller set is kept.
            if req.get(name) is None or (name == "drop_params" and req[name] is False):
                req.pop(name, None)
        if "temperature" not in self.request.model_fields_set:
            # Left out, the worker sees the same default, and knows the caller did not set
            # it (models/domain/params.py: a reasoning model takes no temperature).
            req.pop("temperature", None)
        for name in ("cache_marks", "provider_headers"):  # the Messages door's, when sent
            if not req.get(name):
                req.pop(name, None)
        for turn in (*req["messages"], *req.get("static", {}).get("few_shot", ())):
            if not turn.get("tool_calls"):
                turn.pop("tool_calls", None)
            if turn.get("tool_call_id") is None:
                turn.pop("tool_call_id", None)
            if not turn.get("parts"):
                turn.pop("parts", None)
            if not turn.get("reasoning"):
                turn.pop("reasoning", None)
            if not turn.get("thinking"):
                turn.pop("thinking", None)
        return message


def task_id_for(request: ChatRequest) -> str:
    """The Celery task id of ``request``: its request id, scoped to its tenant.

    Request ids come from callers; two teams may pick the same one. Scoping the task id keeps
    one team's handle from ever reading another team's stored result.
    """
    return tenant_task_id(request.request_id, request.org, request.team)


def tenant_task_id(request_id: str, org: str, team: str) -> str:
    """``request_id`` scoped to ``org``/``team``: the task id, and the name of its job record."""
    import hashlib

    tenant = hashlib.sha256(f"{org}/{team}".encode()).hexdigest()[:12]
    return f"{request_id}~{tenant}"


#: A task's stash key is its result key plus this (workers.tasks._Stash).
STASH_SUFFIX = ":stash"


def ok_reply(result: ChatResult) -> dict[str, Any]:
    """What a task returns when the request succeeded."""
    return {"ok": True, "result": result.model_dump(mode="json")}


def error_reply(request_id: str, error: SluiceError) -> dict[str, Any]:
    """What a task returns when the request ended in a typed error."""
    # The code comes first: worker logs and Flower show only the start of a reply
    # (workers.log_privacy), which must say how the request ended and nothing it said.
    return {"ok": False, "code": error.code, "request_id": request_id, "error": error.to_dict()}
