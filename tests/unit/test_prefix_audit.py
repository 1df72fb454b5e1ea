"""Volatile content in the static part is found by name; a clean prefix reports nothing."""

from __future__ import annotations

from models.domain.prefix_audit import volatile_in_static
from models.domain.request import StaticPart


def test_clean_static_prompt_reports_nothing() -> None:
    assert not volatile_in_static(StaticPart(system="You write product titles. Be brief."))


def test_timestamps_ids_and_dates_in_the_prefix_are_named() -> None:
    fired = volatile_in_static(StaticPart(
        system="Current time: 2026-11-27T10:15:00Z. Request id: req-8f3a9c21.",
        few_shot=({"role": "user", "content": "Order #A12345 shipped on 12/03/2026"},)))
    assert {"iso_timestamp", "request_id", "order_id", "date"} <= set(fired)


def test_long_prompts_are_checked_quickly_on_repeat() -> None:
    import time

    static = StaticPart(system="Rule: be concise. " * 400 + "Today is 2026-11-27.")
    volatile_in_static(static)
    t = time.perf_counter()
    for _ in range(200):
        assert volatile_in_static(static)["date"] == 1
    assert (time.perf_counter() - t) / 200 < 0.001  # memoized: well under a millisecond
