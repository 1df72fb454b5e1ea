"""Map the official SDKs' exceptions onto our retryable / permanent provider errors."""

from __future__ import annotations

from typing import Any

from models.domain.errors import ProviderError, ProviderPermanent, ProviderRetryable

#: Status codes worth another attempt (the SDKs' own rule: 408, 409, 429 and 5xx; 529 included).
RETRYABLE_STATUS = frozenset({408, 409, 429})
#: Error types an error event inside a streamed answer may carry that are worth another try.
RETRYABLE_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "server_error",
                             "timeout_error"})


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds only; dates are ignored)."""
    if headers is None:
        return None
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(key)
        if raw is None:
            continue
        try:
            return max(float(raw) * scale, 0.0)
        except (TypeError, ValueError):
            continue
    return None


#: ``billed`` of an error: the provider may have billed the attempt (it had the request and
#: may have generated), so the ledger charges it at an estimate (workers.attempts).
MAY_BILL = "unknown"
#: httpx errors raised before the request left this host: nothing can have been billed.
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol",
                       "ProxyError", "LocalProtocolError"})


def map_sdk_error(provider: str, exc: Exception) -> ProviderError:
    """Our typed error for an exception raised by the ``openai`` or ``anthropic`` SDK.

    Errors the provider may have billed (a timeout after sending, a dropped connection, an
    unparseable 200, an error inside a stream that had begun) carry ``billed="unknown"``;
    an HTTP error status is not billed.
    """
    if isinstance(exc, ProviderError):
        return exc  # ours, raised inside a stream (the run's time limit)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    name = type(exc).__name__
    if status == 200 or (status is None and name == "APIError"):
        # An error event inside a streamed answer: anthropic raises it with the stream's own
        # 200, openai as a bare APIError. Its type, not the status, says what it was.
        body = getattr(exc, "body", None)
        err = body.get("error", body) if isinstance(body, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        if kind is None or kind in RETRYABLE_TYPES:
            return ProviderRetryable(f"{provider}: the stream ended in an error ({kind or name}): "
                                     f"{_message(exc)}; retried", provider=provider,
                                     billed=MAY_BILL)
        return ProviderPermanent(f"{provider}: the stream ended in an error ({kind}): "
                                 f"{_message(exc)}", provider=provider, billed=MAY_BILL)
    if status is None:
        if name in ("APITimeoutError", "APIConnectionError", "TimeoutException", "ConnectError"):
            return ProviderRetryable(f"{provider}: {name}: could not get an answer in time; "
                                     "the call will be retried", provider=provider,
                                     billed=_billed_by_cause(exc))
        if name in ("RemoteProtocolError", "ReadError", "ReadTimeout"):
            # httpx, raised while a stream was being read: the answer broke off mid-body.
            return ProviderRetryable(f"{provider}: the connection broke off mid-answer "
                                     f"({name}); retried", provider=provider, billed=MAY_BILL)
        if name in ("APIResponseValidationError", "JSONDecodeError", "ValueError"):
            return ProviderRetryable(f"{provider}: the response was not valid ({name}); retried",
                                     provider=provider, billed=MAY_BILL, unparseable=True)
        return ProviderPermanent(f"{provider}: {name}: {exc}", provider=provider)
    message = _message(exc)
    if status in RETRYABLE_STATUS or status >= 500:
        headers = getattr(response, "headers", None)
        return ProviderRetryable(f"{provider} answered {status}: {message}", provider=provider,
                                 status=status, retry_after=retry_after_seconds(headers))
    hint = {401: "check the API key", 403: "the key may not access this model",
            404: "check the model name in the price file", 400: "the request was refused"}
    return ProviderPermanent(f"{provider} answered {status}: {message} ({hint.get(status, '')})",
                             provider=provider, status=status)


def _billed_by_cause(exc: Exception) -> str:
    """``none`` when the underlying httpx error shows the request never left; else unknown."""
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ in _NOT_SENT:
            return "none"
        cause = cause.__cause__ or cause.__context__
        if cause is exc:
            break
    return MAY_BILL


def _message(exc: Exception) -> str:
    # Providers echo parts of a rejected key in 401 messages: mask anything key-shaped.
    from models.domain.redact import Redactor

    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return Redactor()(str(err["message"])[:300])
    return Redactor()(str(exc)[:300])
