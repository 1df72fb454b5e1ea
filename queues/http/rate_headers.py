"""A rate-limit refusal's headers in each door's dialect: OpenAI's ``x-ratelimit-*`` and
Anthropic's ``anthropic-ratelimit-*`` (``retry-after`` comes with every retryable problem)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


def openai_headers(rate: dict[str, Any] | None) -> dict[str, str]:
    """``x-ratelimit-limit/remaining/reset-requests`` (and ``-tokens``) of the limit that
    refused; ``retry-after-ms``, which the openai SDK prefers to ``retry-after``."""
    out: dict[str, str] = {}
    for kind, state in (rate or {}).get("windows", {}).items():
        out[f"x-ratelimit-limit-{kind}"] = str(state["limit"])
        out[f"x-ratelimit-remaining-{kind}"] = str(state["remaining"])
        out[f"x-ratelimit-reset-{kind}"] = _duration(float(state["reset_s"]))
    if rate and rate.get("retry_after_s") is not None:
        out["retry-after-ms"] = str(max(int(float(rate["retry_after_s"]) * 1000), 0))
    return out


def anthropic_headers(rate: dict[str, Any] | None, now: datetime | None = None
                      ) -> dict[str, str]:
    """``anthropic-ratelimit-requests-limit/-remaining/-reset`` (and ``tokens``); the reset
    is an RFC 3339 time, as Anthropic sends it."""
    now = now or datetime.now(timezone.utc)
    out: dict[str, str] = {}
    for kind, state in (rate or {}).get("windows", {}).items():
        at = now + timedelta(seconds=float(state["reset_s"]))
        out[f"anthropic-ratelimit-{kind}-limit"] = str(state["limit"])
        out[f"anthropic-ratelimit-{kind}-remaining"] = str(state["remaining"])
        out[f"anthropic-ratelimit-{kind}-reset"] = at.isoformat(timespec="seconds").replace(
            "+00:00", "Z")
    return out
