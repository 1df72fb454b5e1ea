"""Translate vLLM's exceptions into sluicegate's error tree (EngineDead is never retried)."""

from __future__ import annotations

from typing import Any

from models.domain.errors import EngineDead, ProviderPermanent, ProviderRetryable, SluiceError

PROVIDER = "vllm"
RESTART_HINT = ("restart the GPU worker (celery ... worker --pool threads "
                "-Q interactive.gpu,async.gpu); requests are not retried on a dead engine")


def engine_dead(why: str, **details: Any) -> EngineDead:
    """An :class:`EngineDead` whose message says what happened and what to do."""
    return EngineDead(f"the vLLM engine is not available: {why}; {RESTART_HINT}",
                      provider=PROVIDER, **details)


def translate(exc: BaseException, *, engine_errored: bool) -> SluiceError:
    """Our error for an exception raised by vLLM while serving one request."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, SluiceError):
        return exc
    if isinstance(exc, EngineDeadError) or engine_errored:
        return engine_dead(f"the engine process died ({_describe(exc)})")
    if isinstance(exc, (VLLMClientError, ValueError, TypeError)):
        # vLLM refused the request itself (prompt too long, bad sampling values): retrying
        # the same request cannot help.
        return ProviderPermanent(f"vLLM rejected the request: {_describe(exc)}",
                                 provider=PROVIDER, status=400)
    if isinstance(exc, GracefulHTTPError):
        return ProviderRetryable(f"vLLM is overloaded: {_describe(exc)}", provider=PROVIDER,
                                 status=int(getattr(exc, "http_status", 503) or 503))
    return ProviderRetryable(f"vLLM generation failed: {_describe(exc)}", provider=PROVIDER,
                             status=500)


def _describe(exc: BaseException) -> str:
    # vLLM wraps the root cause (EngineGenerateError from ...); show both, briefly.
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    cause = exc.__cause__
    if cause is not None:
        text += f" <- {type(cause).__name__}: {cause}".rstrip(": ")
    return text[:500]
