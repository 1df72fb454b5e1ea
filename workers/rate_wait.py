"""The worker's side of rate limits: admit an async request that waited in its queue for a
full window, and correct a grant's token estimate to the tokens the answer used."""

from __future__ import annotations

import logging
from typing import Any

from models.domain.errors import (RateLimited, RateLimiterUnavailable, SluiceError,
                                  ValidationError)
from scheduler.ratelimit import Grant

log = logging.getLogger("sluice.ratelimit")

#: How long a deferred request waits when the limiter's Redis is unreachable (fail closed).
UNREACHABLE_WAIT_S = 5.0


def admit_deferred(limiter: Any, message: Any, envelope: Any = None
                   ) -> tuple[Any, float | None]:
    """``(message, None)`` to run now (admitted under every limit, the grant on it), or
    ``(message, wait)``: the limits are still full, come back after ``wait`` seconds.
    ``envelope``: the message's class (a chat Envelope unless given: EmbeddingEnvelope)."""
    if limiter is None or not isinstance(message, dict) or not message.get("rate_wait"):
        return message, None
    from queues.envelope import Envelope

    try:
        env = (envelope or Envelope).model_validate(message)
    except Exception:  # noqa: BLE001 - execute() refuses an undecodable message clearly
        return message, None
    try:
        grant = limiter.acquire(env.request, env.route,
                                env.prompt_tokens + env.request.max_tokens)
    except RateLimited as err:
        return message, max(err.retry_after_s, 0.05)
    except ValidationError:
        return message, None  # a limit lowered below the request: it runs, as admitted before
    except (RateLimiterUnavailable, SluiceError):
        return message, UNREACHABLE_WAIT_S  # Redis or the limits unreadable: fail closed
    return {**message, "rate_wait": False,
            "rate_grant": grant.to_json() if grant else None}, None


def settle_tokens(limiter: Any, message: Any, reply: dict[str, Any]) -> None:
    """Correct the token windows from the estimate to the answer's tokens (an answered
    request only: a failed one keeps its estimate, erring on the side of the limit)."""
    if limiter is None or not isinstance(message, dict) or not reply.get("ok"):
        return
    grant = Grant.from_json(message.get("rate_grant"))
    if grant is None:
        return
    result = reply.get("result") or {}
    usage = result.get("usage")
    if usage is None:  # an embedding: the input tokens it was billed
        used = int(result.get("prompt_tokens") or 0)
    else:
        used = sum(int(usage.get(k) or 0) for k in ("input_uncached", "cache_read",
                                                       "cache_write_5m", "cache_write_1h",
                                                       "output"))
    try:
        limiter.settle(grant, used)
    except Exception as exc:  # noqa: BLE001 - a correction, never the request's outcome
        log.warning("could not correct the rate-limit token estimate: %s", exc)
