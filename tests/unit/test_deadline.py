"""A queued request's deadline: the caller's own timeout or its lane's queue timeout."""

from __future__ import annotations

from models.domain.request import parse_request
from models.domain.settings import load_settings
from queues.producer import Gateway


def request(**kw: object) -> object:
    return parse_request({"team": "t", "feature": "f", **kw,
                          "messages": [{"role": "user", "content": "hi"}]})


def test_the_sooner_of_caller_and_lane_timeout_wins() -> None:
    gw = Gateway(load_settings({}))
    try:
        assert gw.settings.lanes.interactive.queue_timeout_s == 30
        assert gw._deadline(request(), 1000.0) == 1030.0  # type: ignore[arg-type]
        assert gw._deadline(request(timeout_s=4), 1000.0) == 1004.0  # type: ignore[arg-type]
        assert gw._deadline(request(timeout_s=90), 1000.0) == 1030.0  # type: ignore[arg-type]
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
