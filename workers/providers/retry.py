"""Our one retry policy: retryable errors are tried again with backoff, honouring retry-after."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from models.domain.errors import ProviderRetryable

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them."""

    max_attempts: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    #: A retry-after longer than this is not waited for: the error goes to the caller.
    max_retry_after_s: float = 30.0

    def delay(self, attempt: int, error: ProviderRetryable, rand: Callable[[], float]) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if error.retry_after is not None:
            return min(float(error.retry_after), self.max_retry_after_s)
        # Full jitter: spreads retries of many workers hitting the same 429.
        return rand() * min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))


def with_retries(fn: Callable[[], T], policy: RetryPolicy, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random,
                 on_retry: Callable[[int, ProviderRetryable], None] | None = None) -> T:
    """Call ``fn`` until it succeeds, raises a permanent error, or attempts run out."""
    attempt = 1
    while True:
        try:
            return fn()
        except ProviderRetryable as err:
            if attempt >= policy.max_attempts:
                raise
            if err.retry_after is not None and err.retry_after > policy.max_retry_after_s:
                raise
            if on_retry is not None:
                on_retry(attempt, err)
            sleep(policy.delay(attempt, err, rand))
            attempt += 1
