"""Past the workers' capacity the front door refuses at once (503 overloaded) instead of
queueing without bound; nothing it refuses is queued, reserved or billed."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from models.db import ledger, spend
from models.db.engine import make_engine, session_factory
from tests.e2e.frontdoor_support import mint

pytestmark = pytest.mark.integration


def load(door: str, key: str) -> dict[str, Any]:
    r = httpx.get(door + "/admin/health", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    shedding: dict[str, Any] = r.json()["shedding"]
    return shedding


def test_requests_past_the_limit_are_refused_at_once_and_never_billed(
        small_door: str, pg_url: str, standin: Any, integration_settings: Any) -> None:
    team, operator = mint(pg_url, "shed"), mint(pg_url, "ops", role="operator")
    sdk = openai.OpenAI(api_key=team, base_url=small_door + "/v1", max_retries=0, timeout=60)
    # The provider answers the next two calls slowly: they hold the door's two places.
    standin.script_faults(["timeout=3", "timeout=3"], path="openai", model="gpt-4o-mini")

    def ask(tag: str) -> Any:
        return sdk.chat.completions.with_raw_response.create(
            model="cheap", max_tokens=8,
            messages=[{"role": "user", "content": f"{tag} {uuid.uuid4().hex}"}])

    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(ask, "slow") for _ in range(2)]
        deadline = time.monotonic() + 20
        while load(small_door, operator)["inflight"] < 2:
            assert time.monotonic() < deadline, "the two slow requests never got in flight"
            time.sleep(0.05)
        refused: list[tuple[float, openai.APIStatusError]] = []
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(openai.APIStatusError) as exc:
                ask("shed")
            refused.append((time.monotonic() - t0, exc.value))
        answers = [f.result(timeout=60) for f in slow]
    for took, err in refused:
        body = err.body
        assert err.status_code == 503 and isinstance(body, dict) and body["code"] == "overloaded"
        assert err.response.headers["retry-after"] == "1"
        assert err.response.headers["x-should-retry"] == "true"
        assert took < 2.5, "a refusal must not wait for the slow requests"
    assert all(a.http_response.status_code == 200 for a in answers)
    state = load(small_door, operator)
    assert state["shed"] >= 3 and state["inflight"] == 0
    # Once room is back, requests get in again.
    assert ask("after").http_response.status_code == 200
    # The refusals reach the tally `sluice metrics` exposes (flushed once a second).
    import redis

    from queues.shed_tally import read_tally

    client = redis.Redis.from_url(integration_settings.broker.url)
    deadline = time.monotonic() + 10
    while read_tally(client, integration_settings.broker.key_prefix).get("interactive", 0) < 3:
        assert time.monotonic() < deadline, "the door never added its refusals to the tally"
        time.sleep(0.2)
    client.close()
    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            for a in answers:
                assert ledger.get(s, a.headers["x-sluice-request-id"]) is not None
            rows = spend.spend_by(s, "team", team="shed")
        assert sum(line.requests for line in rows) == 3, "only admitted requests are in the ledger"
    finally:
        engine.dispose()
    sdk.close()
