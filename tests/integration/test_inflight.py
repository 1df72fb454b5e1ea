"""The in-flight record: sent messages are tracked until final; lost ones are re-sent once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from queues.inflight import Inflight, InflightMessage

pytestmark = pytest.mark.integration


@pytest.fixture()
def inflight(redis_db_url: str) -> Any:
    client = redis.Redis.from_url(redis_db_url)
    box = Inflight(client, prefix=f"sgtest-{uuid.uuid4().hex[:6]}:")
    yield box
    client.delete(box.times, box.bodies)


def msg(i: int) -> InflightMessage:
    return InflightMessage(task_id=f"t{i}~x", request_id=f"r{i}", task="sluice.execute_api",
                           queue="interactive.api", args=[{"n": i}], options={"priority": 9})


def test_sweep_resends_only_unclaimed_old_messages(inflight: Inflight) -> None:
    now = time.time()
    for i in range(4):
        inflight.add(msg(i), now=now - 1000)
    inflight.add(msg(9), now=now)  # young: never touched
    states = {"r0": None, "r1": "running", "r2": "ok", "r3": "error"}
    sent: list[str] = []
    counts = inflight.sweep(lambda m: sent.append(m.task_id), states.get, older_than_s=300,
                            now=now)
    # r0 never claimed and r1 claimed by a run that may be dead are sent again; done ones go
    assert sorted(sent) == ["t0~x", "t1~x"]
    assert counts == {"resent": 1, "finished": 2, "running": 1, "live": 0, "failed": 0}
    # a re-sent message waits a full period before it could be re-sent again
    assert inflight.sweep(lambda m: sent.append(m.task_id), states.get, older_than_s=300,
                          now=now + 10) == {"resent": 0, "finished": 0, "running": 0,
                                              "live": 0, "failed": 0}
    assert {m.task_id for m in inflight.stale(0, now=now + 1)} == {"t0~x", "t1~x", "t9~x"}


def test_a_failed_ledger_lookup_skips_one_message_not_the_sweep(inflight: Inflight) -> None:
    now = time.time()
    for i in range(3):
        inflight.add(msg(i), now=now - 1000)

    def state_of(request_id: str) -> str | None:
        if request_id == "r1":
            raise ConnectionError("ledger away")
        return None

    sent: list[str] = []
    counts = inflight.sweep(lambda m: sent.append(m.task_id), state_of, older_than_s=300,
                            now=now)
    assert sorted(sent) == ["t0~x", "t2~x"]
    assert counts["failed"] == 1 and counts["resent"] == 2
    # the skipped message is still tracked, for the next sweep
    assert "t1~x" in {m.task_id for m in inflight.stale(0, now=now + 1)}


def test_a_ledger_that_is_away_ends_the_sweep_early(inflight: Inflight) -> None:
    now = time.time()
    for i in range(10):
        inflight.add(msg(i), now=now - 1000)
    asked: list[str] = []

    def away(request_id: str) -> str | None:
        asked.append(request_id)
        raise ConnectionError("ledger away")

    counts = inflight.sweep(lambda m: None, away, older_than_s=300, now=now)
    assert counts["failed"] == len(asked) == 3 and counts["resent"] == 0
    assert len(inflight.stale(0, now=now + 1)) == 10  # all kept for the next sweep


def test_finished_requests_leave_no_record(gateway: Any, integration_settings: Any) -> None:
    box = gateway.inflight
    assert box is not None  # a Redis broker: tracking is on
    result = gateway.complete({"team": "t", "feature": "inflight", "model": "cheap",
                               "cache": {"mode": "bypass"}, "max_tokens": 8,
                               "messages": [{"role": "user", "content": "hello"}]}, timeout=30)
    assert result.text
    deadline = time.time() + 5
    while time.time() < deadline:
        ids = {m.task_id for m in box.stale(0)}
        if not any(i.startswith(result.request_id) for i in ids):
            return
        time.sleep(0.05)
    pytest.fail("the worker did not forget a finished request's in-flight record")
