"""Our one retry policy: retryable errors retried with backoff, retry-after honoured."""

from __future__ import annotations

import pytest

from models.domain.errors import ProviderPermanent, ProviderRetryable
from workers.providers.retry import RetryPolicy, with_retries


def flaky(errors: list[Exception]):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn, calls


def test_retries_until_success_with_jittered_backoff() -> None:
    fn, calls = flaky([ProviderRetryable("x", provider="p"), ProviderRetryable("y", provider="p")])
    waits: list[float] = []
    assert with_retries(fn, RetryPolicy(max_attempts=3, backoff_base_s=1), sleep=waits.append,
                        rand=lambda: 1.0) == "ok"
    assert calls["n"] == 3 and waits == [1.0, 2.0]


def test_retry_after_is_honoured_exactly() -> None:
    fn, _ = flaky([ProviderRetryable("429", provider="p", status=429, retry_after=7)])
    waits: list[float] = []
    with_retries(fn, RetryPolicy(), sleep=waits.append, rand=lambda: 0.0)
    assert waits == [7.0]


def test_too_long_retry_after_goes_to_the_caller() -> None:
    fn, calls = flaky([ProviderRetryable("429", provider="p", retry_after=3600)])
    with pytest.raises(ProviderRetryable):
        with_retries(fn, RetryPolicy(max_retry_after_s=30), sleep=lambda s: None)
    assert calls["n"] == 1


def test_permanent_errors_are_not_retried() -> None:
    fn, calls = flaky([ProviderPermanent("401", provider="p", status=401)])
    with pytest.raises(ProviderPermanent):
        with_retries(fn, RetryPolicy(max_attempts=5), sleep=lambda s: None)
    assert calls["n"] == 1


def test_attempts_run_out() -> None:
    fn, calls = flaky([ProviderRetryable("e", provider="p") for _ in range(10)])
    with pytest.raises(ProviderRetryable):
        with_retries(fn, RetryPolicy(max_attempts=4), sleep=lambda s: None)
    assert calls["n"] == 4
