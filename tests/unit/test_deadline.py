"""A queued request's deadline: the caller's own timeout, else its lane's queue timeout."""

from __future__ import annotations

from models.domain.request import parse_request
from models.domain.settings import load_settings
from queues.producer import Gateway


def request(**kw: object) -> object:
    return parse_request({"team": "t", "feature": "f", **kw,
                          "messages": [{"role": "user", "content": "hi"}]})


def test_the_callers_timeout_else_the_lanes() -> None:
    gw = Gateway(load_settings({}))
    try:
        assert gw.settings.lanes.interactive.queue_timeout_s == 30
        assert gw._deadline(request(), 1000.0) == 1030.0  # type: ignore[arg-type]
        assert gw._deadline(request(timeout_s=4), 1000.0) == 1004.0  # type: ignore[arg-type]
        # A caller that waits longer than the lane's default is not dropped before it gives up.
        assert gw._deadline(request(timeout_s=90), 1000.0) == 1090.0  # type: ignore[arg-type]
        # The async lane waits as long as it must, unless its caller says otherwise.
        assert gw._deadline(request(lane="async"), 1000.0) is None  # type: ignore[arg-type]
        assert gw._deadline(request(lane="async", timeout_s=600),  # type: ignore[arg-type]
                            1000.0) == 1600.0
    finally:
        gw.close()


def test_a_lane_without_a_queue_timeout_sets_none() -> None:
    gw = Gateway(load_settings({"SLUICE_LANES__INTERACTIVE__QUEUE_TIMEOUT_S": "0"}))
    try:
        assert gw._deadline(request(), 5.0) is None  # type: ignore[arg-type]
    finally:
        gw.close()


def test_complete_hands_its_timeout_on_unless_the_request_has_one() -> None:
    gw = Gateway(load_settings({}))
    seen: list[object] = []

    class Done:
        def result(self, timeout: float | None = None) -> str:
            return "answer"

    def submit(data: object, **_: object) -> Done:
        seen.append(data)
        return Done()

    gw.submit = submit  # type: ignore[method-assign]
    try:
        body = {"team": "t", "feature": "f", "messages": [{"role": "user", "content": "hi"}]}
        assert gw.complete(body, timeout=7) == "answer"
        assert gw.complete({**body, "timeout_s": 2}, timeout=7) == "answer"
        assert gw.complete(parse_request(body), timeout=9) == "answer"
        gw.complete(body, timeout=None)
        gw.complete(body, timeout=float("inf"))  # waits for ever: no deadline to carry
        assert [getattr(d, "timeout_s", None) if not isinstance(d, dict) else d.get("timeout_s")
                for d in seen] == [7, 2, 9, None, None]
        assert "timeout_s" not in body, "the caller's dict is not changed"
    finally:
        gw.close()


def test_the_front_door_never_lets_a_deadline_outlive_its_own_wait() -> None:
    from queues.http.context import FrontDoor

    fd = FrontDoor(settings=load_settings({}), gateway=None, keys=None,  # type: ignore[arg-type]
                   waiter=None, jobs=None, sessions=None)  # type: ignore[arg-type]
    door_s = fd.timeout_for("interactive")  # the lane's time limit and a little: 80 s
    assert door_s == 80
    assert fd.deadline_for("interactive", 600.0) == 80, "the openai SDK's default 600 s"
    assert fd.deadline_for("interactive", 5.0) == 5
    assert fd.deadline_for("interactive", None) is None  # the lane's 30 s applies
    long_lane = FrontDoor(settings=load_settings(  # type: ignore[arg-type]
        {"SLUICE_LANES__INTERACTIVE__QUEUE_TIMEOUT_S": "0"}), gateway=None, keys=None,
        waiter=None, jobs=None, sessions=None)
    assert long_lane.deadline_for("interactive", None) == 80


def test_an_unset_timeout_stays_out_of_the_message() -> None:
    """Workers of the previous release refuse unknown request fields (rolling deploys)."""
    from models.domain.result import Route
    from queues.envelope import Envelope

    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive", reason="test")
    bare = Envelope(request=request(), route=route).to_message()  # type: ignore[arg-type]
    assert "timeout_s" not in bare["request"]
    timed = Envelope(request=request(timeout_s=5), route=route).to_message()  # type: ignore
    assert timed["request"]["timeout_s"] == 5
    assert Envelope.model_validate(bare).request.timeout_s is None
