"""Front-door load shedding: a standing queue cuts the in-flight limit, a burst does not."""

from __future__ import annotations

import math

import pytest

from models.domain.errors import Overloaded
from scheduler.shedding import LoadShedder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def shedder(clock: Clock, **kw: float) -> LoadShedder:
    args = {"target_wait_ms": 50.0, "interval_s": 0.5, "max_inflight": 100,
            "min_inflight": 4, **kw}
    return LoadShedder(clock=clock, **args)  # type: ignore[arg-type]


def fill(s: LoadShedder, n: int) -> int:
    """Admit up to ``n``; how many got in."""
    admitted = 0
    for _ in range(n):
        try:
            s.enter()
        except Overloaded:
            break
        admitted += 1
    return admitted


def test_the_hard_cap_refuses_with_a_retryable_typed_error() -> None:
    s = shedder(Clock(), max_inflight=3, min_inflight=1)
    assert fill(s, 3) == 3
    with pytest.raises(Overloaded) as exc:
        s.enter()
    assert exc.value.code == "overloaded" and exc.value.retryable
    assert exc.value.details["retry_after"] == 1.0 and "add workers" in exc.value.message
    assert s.state().shed == 1
    s.exit(1.0)
    s.enter()  # room again


def test_a_standing_queue_cuts_the_limit_below_the_most_in_flight() -> None:
    clock = Clock()
    s = shedder(clock)
    assert fill(s, 60) == 60
    for _ in range(10):  # every answer this interval waited long: a standing queue
        s.exit(400.0)
    clock.now += 0.6
    with pytest.raises(Overloaded):  # the interval ends on the next call, which is refused
        s.enter()
    state = s.state()
    # From the interval's peak (60), not the lull at its end (50).
    assert state.limit == int(60 * 0.75) and state.last_min_wait_ms == 400.0
    assert fill(s, 100) == 0, "over the cut limit, new requests must be refused"
    # Waits drop under the target: the limit grows back, a quarter at a time.
    for _ in range(20):
        s.exit(2.0)
    clock.now += 0.6
    s.exit(2.0)
    assert s.state().limit == 45 + 11


def test_a_burst_with_one_short_wait_is_not_a_standing_queue() -> None:
    clock = Clock()
    s = shedder(clock)
    fill(s, 20)
    for wait in (900.0, 700.0, 3.0, 800.0):
        s.exit(wait)
    clock.now += 0.6
    s.exit(1000.0)
    assert s.state().limit == 100


def test_timeouts_count_and_the_limit_has_a_floor() -> None:
    clock = Clock()
    s = shedder(clock, min_inflight=4)
    for _ in range(8):
        fill(s, 2)
        s.exit(math.inf)  # a caller timed out waiting: the queue outlasted it
        clock.now += 0.6
    assert s.state().limit == 4, "answers must keep coming to measure the queue by"
    assert fill(s, 10) <= 4


def test_no_answers_in_an_interval_changes_nothing() -> None:
    clock = Clock()
    s = shedder(clock)
    fill(s, 5)
    clock.now += 5
    s.enter()
    assert s.state() == s.state().__class__(100, 6, 0, None)


def test_exits_never_drive_the_count_below_zero() -> None:
    s = shedder(Clock())
    s.exit(None)
    s.exit(None)
    assert s.state().inflight == 0


@pytest.mark.parametrize("kw", [{"cut": 1.0}, {"min_inflight": 0},
                                {"max_inflight": 2, "min_inflight": 3}])
def test_nonsense_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        shedder(Clock(), **kw)


def test_check_refuses_like_enter_without_admitting() -> None:
    s = shedder(Clock(), max_inflight=2, min_inflight=1)
    s.check()
    assert s.state().inflight == 0, "a check admits nothing"
    fill(s, 2)
    with pytest.raises(Overloaded):
        s.check()
    assert s.state().shed == 1 and s.state().inflight == 2


def test_answers_from_before_a_cut_do_not_cut_again() -> None:
    """They describe the queue as it was when they joined it; cutting on each of them would
    drive the limit to its floor while the old queue drains."""
    clock = Clock()
    s = shedder(clock)
    early = [s.enter() for _ in range(40)]
    s.exit(300.0, early.pop())
    clock.now += 0.6
    s.exit(300.0, early.pop())  # ends the interval: cut from the 40 that were in flight
    first = s.state().limit
    assert first == int(40 * 0.75)
    for _ in range(3):  # more slow answers to requests let in before the cut: hold
        s.exit(300.0, early.pop())
        clock.now += 0.6
        s.exit(300.0, early.pop())
        assert s.state().limit == first
    while s.state().inflight >= first:
        s.exit(None, early.pop())  # ended without a wait to learn from
    late = s.enter()  # let in after the cut, and still slow: the queue stands, cut again
    s.exit(300.0, late)
    clock.now += 0.6
    s.exit(300.0, early.pop())
    assert s.state().limit < first


def test_a_lull_at_the_end_of_an_interval_does_not_cut_to_the_floor() -> None:
    clock = Clock()
    s = shedder(clock)
    tokens = [s.enter() for _ in range(40)]
    for t in tokens:
        s.exit(None, t)  # all ended (no wait learned) ...
    late = s.enter()
    s.exit(500.0, late)  # ... but one answer shows a standing queue
    clock.now += 0.6
    s.check()
    assert s.state().limit == 30, "cut from the interval's 40, not the 0 left at its end"


def test_the_health_report_is_json_even_when_every_answer_timed_out() -> None:
    import json

    clock = Clock()
    s = shedder(clock)
    s.exit(math.inf, s.enter())
    clock.now += 0.6
    s.check()
    assert s.state().last_min_wait_ms == math.inf
    report = s.state().as_json()
    assert report["last_min_wait_ms"] is None and report["limit"] == 4
    json.dumps(report, allow_nan=False)
