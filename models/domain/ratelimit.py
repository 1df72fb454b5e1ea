"""Rate limits as data: which limits apply to a request, and the window counters they add to.

A limit caps requests and/or tokens (input + output) per fixed window (a minute unless set) on
one scope of a request: its org, team, API key, feature, routed model, or provider deployment.
Each admission adds to one counter per (limit, kind, window); the Redis script
(``scheduler/ratelimit.py``) checks and adds to all of them at once, all or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from models.domain.errors import ValidationError
from models.domain.embedding import EmbeddingRequest
from models.domain.request import ChatRequest
from models.domain.result import Route

#: Scopes a rate limit may have, widest first (the refusal names the first that refused).
RATE_SCOPES: tuple[str, ...] = ("org", "team", "key", "feature", "model", "deployment")
KINDS: tuple[str, ...] = ("requests", "tokens")
#: The org of a limit that applies in every org (a provider deployment's, usually).
EVERY_ORG = "*"
#: What is rate limited: chat and embedding requests alike (an embedding's tokens: its input).
Limited = ChatRequest | EmbeddingRequest


@dataclass(frozen=True)
class RateLimit:
    """At most ``rpm`` requests and ``tpm`` tokens per ``window_s`` on ``scope`` = ``key``."""

    scope: str
    key: str
    org: str = "default"
    rpm: int | None = None
    tpm: int | None = None
    window_s: int = 60

    @property
    def name(self) -> str:
        """``scope:key``, as refusals and metrics name it."""
        return f"{self.scope}:{self.key}"


@dataclass(frozen=True)
class Charge:
    """What one admission adds to one window counter of one limit."""

    name: str
    kind: str
    limit: int
    cost: int
    window_s: int
    org: str

    def counter(self, prefix: str, now: float) -> str:
        """The Redis key of the window holding ``now`` (the window index names it)."""
        return f"{prefix}rl:{self.org}:{self.name}:{self.kind}:{self.window_s}:" \
               f"{int(now // self.window_s)}"

    def resets_in(self, now: float) -> float:
        """Seconds until the window holding ``now`` ends and this counter starts afresh."""
        return (int(now // self.window_s) + 1) * self.window_s - now


def check_limit(limit: RateLimit) -> None:
    """Refuse a limit that could never admit anything or names an unknown scope."""
    if limit.scope not in RATE_SCOPES:
        raise ValidationError(f"unknown rate-limit scope {limit.scope!r}; use one of "
                              f"{', '.join(RATE_SCOPES)}", field="scope")
    if limit.rpm is None and limit.tpm is None:
        raise ValidationError("give --rpm, --tpm or both", field="rpm")
    for what, value in (("rpm", limit.rpm), ("tpm", limit.tpm)):
        if value is not None and value < 1:
            raise ValidationError(f"{what} must be at least 1 (remove the limit instead)",
                                  field=what)
    if not 1 <= limit.window_s <= 86_400:
        raise ValidationError("a window is 1 to 86400 seconds", field="window_s")


def scope_values(request: Limited, route: Route) -> dict[str, str | None]:
    """The key ``request`` (routed by ``route``) has in each rate-limit scope."""
    return {"org": request.org, "team": request.team, "key": request.api_key,
            "feature": request.feature, "model": route.model,
            "deployment": deployment_of(route)}


def deployment_of(route: Route) -> str:
    """The provider deployment a route sends to: the provider's own limits are per model."""
    return f"{route.provider}/{route.model}"


def applicable_limits(request: Limited, route: Route,
                      index: Mapping[tuple[str, str, str], Iterable[RateLimit]]
                      ) -> list[RateLimit]:
    """Every limit of ``index`` (keyed by (org, scope, key)) that applies to the request: its
    own org's, and those set for every org, widest scope first."""
    found: list[RateLimit] = []
    for scope, value in scope_values(request, route).items():
        if value is None:
            continue
        for org in (request.org, EVERY_ORG):
            found.extend(index.get((org, scope, value), ()))
    return found


def charges_for(limits: Iterable[RateLimit], tokens: int) -> list[Charge]:
    """The counters one request adds to: one per limit and kind it caps. A request whose
    ``tokens`` alone pass a token limit could never be admitted: a ValidationError says so."""
    out: list[Charge] = []
    for lim in limits:
        if lim.rpm is not None:
            out.append(Charge(lim.name, "requests", lim.rpm, 1, lim.window_s, lim.org))
        if lim.tpm is not None:
            if tokens > lim.tpm:
                raise ValidationError(
                    f"this request may use {tokens} tokens (prompt + max_tokens), more than "
                    f"rate limit {lim.name} allows in a whole window ({lim.tpm} per "
                    f"{lim.window_s} s): lower max_tokens or shorten the prompt",
                    field="max_tokens", limit=lim.name)
            out.append(Charge(lim.name, "tokens", lim.tpm, tokens, lim.window_s, lim.org))
    return out
