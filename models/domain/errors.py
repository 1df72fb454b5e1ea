"""One typed error tree for everything sluicegate raises; every message says what to do."""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Base of every error sluicegate raises on purpose."""

    #: Stable machine-readable code (HTTP front door, CLI ``--json``, task results).
    code = "sluice_error"
    #: Whether the same call may succeed if simply tried again later.
    retryable = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, used to carry the error across the queue."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class ConfigError(SluiceError):
    """Settings, the price file or a policy is missing or inconsistent."""

    code = "config_error"


class ValidationError(SluiceError):
    """A request is malformed; ``field`` names the offending part."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class UnknownModelError(ValidationError):
    """A request named a model the catalogue does not hold."""

    code = "unknown_model"


class NotFound(ValidationError):
    """A request names something of its own (a stored response) that is not there for its
    key's team: never kept, expired, deleted, or another team's."""

    code = "not_found"


class ContextLengthError(ValidationError):
    """The prompt plus ``max_tokens`` does not fit the chosen model's context window."""

    code = "context_length_exceeded"


class UnsupportedParameter(ValidationError):
    """A parameter the routed model cannot honour; the message names the models that can."""

    code = "unsupported_parameter"


class BudgetExceeded(SluiceError):
    """Admission refused: the request's worst-case cost does not fit a budget."""

    code = "budget_exceeded"


class QueuePaused(SluiceError):
    """The lane this request needs is paused by an operator or the budget governor."""

    code = "queue_paused"
    retryable = True


class ProviderError(SluiceError):
    """A provider call failed; see the retryable and permanent subclasses."""

    code = "provider_error"

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 **details: Any) -> None:
        super().__init__(message, provider=provider, status=status, **details)
        self.provider = provider
        self.status = status


class ProviderRetryable(ProviderError):
    """Transient provider failure (429, 408, 409, 5xx, timeout); ``retry_after`` in seconds."""

    code = "provider_retryable"
    retryable = True

    def __init__(self, message: str, *, provider: str, status: int | None = None,
                 retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message, provider=provider, status=status, retry_after=retry_after,
                         **details)
        self.retry_after = retry_after


class ProviderPermanent(ProviderError):
    """The provider refused the request for good (bad key, bad request, model not found)."""

    code = "provider_permanent"


class EngineDead(ProviderPermanent):
    """The self-hosted engine is not running; restart the GPU worker."""

    code = "engine_dead"


class LedgerError(SluiceError):
    """The ledger could not be read or written."""

    code = "ledger_error"
    retryable = True


class ResultTimeout(SluiceError):
    """The result did not arrive in time; the request may still complete (poll its handle)."""

    code = "result_timeout"
    retryable = True


_BY_NAME: dict[str, type[SluiceError]] = {}


def error_class(name: str) -> type[SluiceError]:
    """The error class called ``name``, for rebuilding errors that crossed the queue."""
    if not _BY_NAME:
        stack: list[type[SluiceError]] = [SluiceError]
        while stack:
            cls = stack.pop()
            _BY_NAME[cls.__name__] = cls
            stack.extend(cls.__subclasses__())
    return _BY_NAME.get(name, SluiceError)


def from_dict(data: dict[str, Any]) -> SluiceError:
    """Rebuild an error produced by :meth:`SluiceError.to_dict`."""
    cls = error_class(str(data.get("type", "SluiceError")))
    err = SluiceError.__new__(cls)
    Exception.__init__(err, data.get("message", ""))
    err.message = str(data.get("message", ""))
    err.details = dict(data.get("details") or {})
    for key in ("field", "provider", "status", "retry_after", "limit", "retry_after_s"):
        if key in err.details:
            setattr(err, key, err.details[key])
    return err


class Overloaded(SluiceError):
    """The front door sheds load: queue waits show the workers are behind; retry shortly."""

    code = "overloaded"
    retryable = True


class DeadlineExceeded(SluiceError):
    """The request waited in its queue past its deadline and was not run (nor billed)."""

    code = "deadline_exceeded"
    retryable = True


class BatchPending(SluiceError):
    """The request still waits in its provider batch; its task comes back to poll it (the
    claim stays ``running`` and the reservation held), so its caller sees it running."""

    code = "batch_pending"
    retryable = True


class TimeLimitExceeded(SluiceError):
    """The run used up its lane's time limit; the attempt in flight was abandoned and charged."""

    code = "time_limit"
    retryable = True


class Cancelled(SluiceError):
    """Its caller cancelled the request before a worker started it: not run, not billed."""

    code = "cancelled"


class BrokerError(SluiceError):
    """The queue broker could not take the request; nothing was dispatched, retry later."""

    code = "broker_unavailable"
    retryable = True


class RateLimited(SluiceError):
    """A rate limit (requests or tokens per window) has no room now; ``retry_after_s`` says
    when it will, ``limit`` names the one that refused (``key:<id>:tokens``, ...)."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, limit: str, retry_after_s: float, **details: Any
                 ) -> None:
        super().__init__(message, limit=limit, retry_after=retry_after_s,
                         retry_after_s=retry_after_s, **details)
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.retry_after = retry_after_s


class RateLimiterUnavailable(SluiceError):
    """The rate limiter's Redis cannot be reached: hard limits fail closed (nothing admitted)."""

    code = "rate_limiter_unavailable"
    retryable = True


class NotAllowed(ValidationError):
    """The API key's policy does not allow this model or lane; ``field`` names which."""

    code = "not_allowed"
