"""Errors as OpenAI-shaped responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from models.domain.errors import SluiceError

#: HTTP status per SluiceError code; anything unlisted is a 500.
STATUS_BY_CODE = {
    "invalid_request": 400, "context_length_exceeded": 400, "unsupported_parameter": 400, "unknown_model": 404,
    "budget_exceeded": 429, "queue_paused": 503, "broker_unavailable": 503,
    "ledger_error": 503, "provider_retryable": 503, "provider_permanent": 502,
    "engine_dead": 502, "result_timeout": 504, "result_lost": 410, "overloaded": 503,
    "deadline_exceeded": 504, "cancelled": 409,
}
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "conflict_error",
          410: "invalid_request_error", 413: "invalid_request_error",
          429: "insufficient_quota"}
#: Statuses the official SDKs would retry on their own; we say when that is pointless.
_SDK_RETRIES = frozenset({408, 409, 429, 500, 502, 503, 504})


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, extra: dict[str, Any] | None = None,
                   retry: bool | None = None, retry_after: float | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in OpenAI's shape; ``retry`` sets ``x-should-retry``, which the SDKs obey."""
    error: dict[str, Any] = {"message": message,
                             "type": _TYPES.get(status, "server_error" if status >= 500
                                                else "invalid_request_error"),
                             "param": param, "code": code}
    if extra:
        error.update(extra)
    out = dict(headers or {})
    if retry is None:
        retry = status in (503,) and retry_after is not None
    if status in _SDK_RETRIES or retry:
        out["x-should-retry"] = "true" if retry else "false"
    if retry_after is not None:
        out["retry-after"] = f"{max(retry_after, 0):g}"
    return JSONResponse({"error": error}, status_code=status, headers=out)


def status_of(err: SluiceError) -> int:
    """The HTTP status that fits ``err``."""
    if type(err) is SluiceError and "request_id" in err.details:
        return 409  # the same request id is being executed by another run
    return STATUS_BY_CODE.get(err.code, 500)


def sluice_error_response(err: SluiceError, *, param: str | None = None) -> JSONResponse:
    """The response for a typed sluicegate error (budget refusals name their budget)."""
    status = status_of(err)
    extra: dict[str, Any] = {}
    if err.code == "budget_exceeded":
        extra["budget"] = {k: err.details.get(k) for k in
                           ("budget", "scope", "key", "window", "limit", "spent", "reserved",
                            "requested", "resets_at")}
    for key in ("request_id", "queue"):
        if key in err.details:
            extra[key] = err.details[key]
    after = err.details.get("retry_after") if err.retryable else None
    if err.retryable and after is None and status == 503:
        after = 1.0
    return error_response(status, err.message, param=param, code=err.code, extra=extra,
                          retry=bool(err.retryable and status == 503),
                          retry_after=after if isinstance(after, (int, float)) else None)
