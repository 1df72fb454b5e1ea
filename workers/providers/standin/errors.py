"""Error responses in each provider's real wire shape, so the SDKs raise their own classes."""

from __future__ import annotations

from starlette.responses import JSONResponse

#: Anthropic's ``error.type`` per status (see its "Errors" page); 529 is its overload code.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
#: OpenAI's ``(error.type, error.code)`` per status.
_OPENAI_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None), 404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class RequestInvalid(Exception):
    """A request the real provider would refuse; becomes a 4xx in that provider's shape."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def openai_error(status: int, message: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    kind, code = _OPENAI_TYPES.get(status, ("server_error" if status >= 500
                                            else "invalid_request_error", None))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def anthropic_error(status: int, message: str, *,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"type": "error", "error": {"type", "message"}}`` with ``status``."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


#: Google's ``error.status`` per HTTP status (google.rpc.Code names).
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                  503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(status: int, message: str, *,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": {"code", "message", "status"}}`` with ``status``, as the Gemini API sends."""
    kind = _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    body = {"error": {"code": status, "message": message, "status": kind}}
    return JSONResponse(body, status_code=status, headers=headers)


def provider_error(family: str, status: int, message: str, *, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error response for ``family`` ("openai", "anthropic" or "gemini")."""
    if family == "gemini":
        return gemini_error(status, message, headers=headers)
    if family == "anthropic":
        return anthropic_error(status, message, headers=headers)
    return openai_error(status, message, param=param, headers=headers)
