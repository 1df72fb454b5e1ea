"""The rate-limit step of an admission, run inside the budget reservation's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.domain.errors import RateLimited
from models.domain.ratelimit import Charge
from scheduler.ratelimit import Grant


@dataclass
class RateStep:
    """Takes the request's rate windows once: the grant, or for an async-lane request over a
    limit no grant and how long it waits in its queue before a worker admits it.

    The admission runs it after the budgets are locked and taken, before that commits, so
    a refusal by either holds nothing and no admission sees half of another. When no
    admission can run it inside (none configured, no budget applies, or one without
    ``within``), :meth:`ensure` runs it after the money.
    """

    limiter: Any
    request: Any
    route: Any
    tokens: int  # the prompt's; the request's ``max_tokens`` is added
    grant: Grant | None = None
    waits: float | None = None
    charges: list[Charge] = field(default_factory=list, init=False)
    ran: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        # Worked out first: a request larger than a whole token window is refused before
        # any money is held (ValidationError naming the limit).
        if self.limiter is not None:
            self.charges = self.limiter.charges(self.request, self.route,
                                                self.tokens + self.request.max_tokens)

    @property
    def needed(self) -> Any:
        """Itself when some limit applies (to pass as ``within``), else None: a request no
        limit applies to keeps the reservation's one-statement path."""
        return self if self.charges else None

    def __call__(self) -> None:
        if self.ran:
            return  # once: a reservation retried on a fresh connection takes nothing twice
        self.ran = True
        if not self.charges:
            return
        try:
            self.grant = self.limiter.acquire_charges(self.charges)
        except RateLimited as err:
            if self.request.lane != "async":
                raise
            self.waits = err.retry_after_s

    def ensure(self) -> None:
        """Run it now if the admission did not."""
        self()

    def give_back(self) -> None:
        """Refund what it took (the send failed after it ran)."""
        if self.grant is not None:
            self.limiter.refund(self.grant)
            self.grant = None
