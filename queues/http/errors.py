"""Errors as problems (status, message, param, code, retry advice) and OpenAI's shape of them.

Each door renders a :class:`Problem` in its own wire format (``queues/http/wire``); the status,
the retry advice and the budget details are decided here, once, for every door.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from models.domain.errors import SluiceError
from queues.http.rate_headers import openai_headers

#: HTTP status per SluiceError code; anything unlisted is a 500.
STATUS_BY_CODE = {
    "invalid_request": 400, "context_length_exceeded": 400, "unsupported_parameter": 400,
    "unknown_model": 404, "not_found": 404,
    "budget_exceeded": 429, "queue_paused": 503, "broker_unavailable": 503,
    "ledger_error": 503, "provider_retryable": 503, "provider_permanent": 502,
    "engine_dead": 502, "result_timeout": 504, "result_lost": 410, "overloaded": 503,
    "deadline_exceeded": 504, "cancelled": 409,
    "rate_limited": 429, "rate_limiter_unavailable": 503, "not_allowed": 403,
}
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "conflict_error",
          410: "invalid_request_error", 413: "invalid_request_error",
          429: "insufficient_quota"}
#: Statuses the official SDKs would retry on their own; we say when that is pointless.
_SDK_RETRIES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Problem:
    """One error answer, before a wire format gives it its shape."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    #: More fields of the error object (a budget refusal names its budget).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Whether retrying helps (``x-should-retry``, which both SDKs obey); None: by status.
    retry: bool | None = None
    retry_after: float | None = None
    headers: dict[str, str] | None = None
    #: A rate-limit refusal: ``{"limit", "retry_after_s", "windows": {kind: {limit,
    #: remaining, reset_s}}}``, which each door turns into its own headers.
    rate: dict[str, Any] | None = None

    def response_headers(self) -> dict[str, str]:
        """``x-should-retry`` and ``retry-after`` as the SDKs read them, and any others."""
        out = dict(self.headers or {})
        retry = self.retry
        if retry is None:
            retry = self.status == 503 and self.retry_after is not None
        if self.status in _SDK_RETRIES or retry:
            out["x-should-retry"] = "true" if retry else "false"
        if self.retry_after is not None:
            out["retry-after"] = f"{max(self.retry_after, 0):g}"
        return out


def openai_error(problem: Problem) -> dict[str, Any]:
    """The ``error`` object in OpenAI's shape."""
    error: dict[str, Any] = {"message": problem.message,
                             "type": _TYPES.get(problem.status, "server_error"
                                                if problem.status >= 500
                                                else "invalid_request_error"),
                             "param": problem.param, "code": problem.code}
    error.update(problem.extra)
    return error


def openai_response(problem: Problem) -> JSONResponse:
    """``problem`` as an OpenAI-shaped error response."""
    return JSONResponse({"error": openai_error(problem)}, status_code=problem.status,
                        headers={**problem.response_headers(), **openai_headers(problem.rate)})


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, extra: dict[str, Any] | None = None,
                   retry: bool | None = None, retry_after: float | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in OpenAI's shape; ``retry`` sets ``x-should-retry``, which the SDKs obey."""
    return openai_response(Problem(status, message, param, code, dict(extra or {}), retry,
                                   retry_after, headers))


def status_of(err: SluiceError) -> int:
    """The HTTP status that fits ``err``."""
    if type(err) is SluiceError and "request_id" in err.details:
        return 409  # the same request id is being executed by another run
    return STATUS_BY_CODE.get(err.code, 500)


def problem_of(err: SluiceError, *, param: str | None = None) -> Problem:
    """The problem a typed sluicegate error answers with (budget refusals name their budget)."""
    status = status_of(err)
    extra: dict[str, Any] = {}
    if err.code == "budget_exceeded":
        extra["budget"] = {k: err.details.get(k) for k in
                           ("budget", "scope", "key", "window", "limit", "spent", "reserved",
                            "requested", "resets_at")}
    for key in ("request_id", "queue"):
        if key in err.details:
            extra[key] = err.details[key]
    if err.code == "rate_limited":
        # The SDKs retry a 429 after retry-after: a rate limit frees up by itself.
        wait = err.details.get("retry_after_s")
        extra["limit"] = err.details.get("limit")
        rate = {"limit": err.details.get("limit"), "retry_after_s": wait,
                "windows": err.details.get("rate") or {}}
        return Problem(429, err.message, param, err.code, extra, retry=True,
                       retry_after=wait if isinstance(wait, (int, float)) else None, rate=rate)
    after = err.details.get("retry_after") if err.retryable else None
    if err.retryable and after is None and status == 503:
        after = 1.0
    return Problem(status, err.message, param, err.code, extra,
                   retry=bool(err.retryable and status == 503),
                   retry_after=after if isinstance(after, (int, float)) else None)


def sluice_error_response(err: SluiceError, *, param: str | None = None) -> JSONResponse:
    """The OpenAI-shaped response for a typed sluicegate error."""
    return openai_response(problem_of(err, param=param))
