"""Rate limits through the producer and the session worker: the typed error with its wait, a
budget refusal giving the windows back, async requests waiting in their queue, and the token
estimate corrected to the answer's tokens at settlement."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db.budgets import ReservationRow, delete_budget, get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.rate_limits import remove_limit, set_limit
from models.domain.errors import BudgetExceeded, RateLimited
from models.domain.ratelimit import RateLimit
from models.domain.request import parse_request
from models.domain.tokens import prompt_count
from tests.billed import WAIT_S

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url, pool_size=4)
    yield session_factory(engine)
    engine.dispose()


def ask(team: str, **kw: Any) -> dict[str, Any]:
    return {"request_id": f"rl-{uuid.uuid4().hex}", "team": team, "feature": "rl",
            "model": "cheap", "max_tokens": 40, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Tagline for a lamp {uuid.uuid4().hex}"}],
            **kw}


@pytest.fixture()
def team(sessions: Any, gateway: Any) -> Any:
    """A fresh team name; its limits are removed afterwards (the worker shares the table)."""
    name = f"rl{uuid.uuid4().hex[:8]}"
    yield name
    with sessions() as s:
        remove_limit(s, "default", "team", name)
        s.commit()


def limit(sessions: Any, gateway: Any, team: str, **kw: Any) -> None:
    with sessions() as s:
        set_limit(s, RateLimit("team", team, **kw))
        s.commit()
    gateway.limiter.book.invalidate()
    time.sleep(1.1)  # the worker process reads the limits table at most once a second


def used(gateway: Any, team: str) -> dict[str, int]:
    client = gateway.limiter.client
    prefix = f"{gateway.limiter.prefix}rl:default:team:{team}:"
    return {k.decode()[len(prefix):]: int(client.get(k) or 0)
            for k in client.scan_iter(prefix + "*", count=1000)}


def test_over_a_limit_the_producer_raises_a_typed_error_with_the_wait(
        gateway: Any, sessions: Any, team: str) -> None:
    limit(sessions, gateway, team, rpm=1)
    assert gateway.complete(ask(team), timeout=30).text
    with pytest.raises(RateLimited) as err:
        # The first may have ended in the window before (one a minute): then this fills it.
        for _ in range(2):
            gateway.submit(ask(team))
    assert err.value.limit == f"team:{team}" and err.value.retryable
    assert 0 < err.value.retry_after_s <= 60
    assert "retry after" in err.value.message


def test_a_budget_refusal_never_touches_the_rate_windows(gateway: Any, sessions: Any,
                                                         team: str) -> None:
    limit(sessions, gateway, team, rpm=5, tpm=100_000)
    with sessions() as s:
        b = set_budget(s, "team", team, "total", hard=Decimal("0.000000001"))
        s.commit()
    gateway.admission.invalidate()
    try:
        with pytest.raises(BudgetExceeded):
            gateway.submit(ask(team))
        # The windows are taken inside the reservation, after the budgets fit: not at all.
        assert used(gateway, team) == {}
        # Counted by the limit that refused, beside the rate limits' refusals.
        assert gateway.limiter.refusal_counts()[f"budget:team:{team}:total:usd"] == 1
    finally:
        with sessions() as s:
            delete_budget(s, b.scope, b.key, b.window, org=b.org)
            s.commit()
        gateway.admission.invalidate()


def test_a_rate_refusal_holds_no_money(gateway: Any, sessions: Any, team: str) -> None:
    limit(sessions, gateway, team, rpm=1)
    with sessions() as s:
        b = set_budget(s, "team", team, "total", hard=Decimal("5"))
        s.commit()
    gateway.admission.invalidate()
    try:
        first = ask(team)
        gateway.submit(first).result(timeout=30)
        refused = ask(team)
        with pytest.raises(RateLimited):
            for _ in range(2):  # the first may have ended in the window before
                gateway.submit(refused)
                refused = ask(team)
        with sessions() as s:
            held = s.scalar(select(func.count()).select_from(ReservationRow).where(
                ReservationRow.request_id == refused["request_id"]))
            budget = get_budget(s, "team", team, "total")
        # Rolled back inside the reservation's transaction: no row, nothing reserved.
        assert held == 0 and budget is not None and budget.reserved == 0
    finally:
        with sessions() as s:
            delete_budget(s, b.scope, b.key, b.window, org=b.org)
            s.commit()
        gateway.admission.invalidate()


def test_requests_the_budget_refuses_never_crowd_a_shared_window(
        gateway: Any, sessions: Any, team: str) -> None:
    # Two teams share one feature's window; the broke team's requests are all refused by its
    # budget. Taken as two ordered steps (windows, then money, then a refund), each of those
    # would hold a slot for the length of its budget check and crowd the other team out of
    # the window; taken inside the reservation, they never touch it.
    feature, rich = f"rlf{uuid.uuid4().hex[:8]}", f"{team}r"
    with sessions() as s:
        set_limit(s, RateLimit("feature", feature, rpm=8))
        b = set_budget(s, "team", team, "total", hard=Decimal("0.000000001"))
        s.commit()
    gateway.limiter.book.invalidate()
    gateway.admission.invalidate()
    time.sleep(1.1)  # the worker's limits cache
    with pytest.raises(BudgetExceeded):  # this thread loads the new budget list (the others
        gateway.submit(ask(team, feature=feature))  # would read the old one meanwhile)
    outcomes: list[str] = []
    try:
        def one(who: str) -> None:
            try:
                gateway.submit(ask(who, feature=feature, max_tokens=8))
                outcomes.append(f"{who}:sent")
            except BudgetExceeded:
                outcomes.append(f"{who}:budget")
            except RateLimited:
                outcomes.append(f"{who}:rate")

        crowd = [team] * 48 + [rich] * 8
        random.Random(7).shuffle(crowd)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, crowd))
        assert outcomes.count(f"{team}:budget") == 48
        assert outcomes.count(f"{rich}:sent") == 8, outcomes
    finally:
        with sessions() as s:
            delete_budget(s, b.scope, b.key, b.window, org=b.org)
            remove_limit(s, "default", "feature", feature)
            s.commit()
        gateway.admission.invalidate()


def settled(gateway: Any, team: str, estimate: int) -> dict[str, int]:
    """The team's windows once they no longer hold ``estimate`` (what admission took): the
    worker corrects them after its answer and its ledger write, so an answered request's
    windows may still hold it for a moment (bounded: an uncorrected window stays as it is)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        windows = used(gateway, team)
        if list(windows.values()) != [estimate] or time.monotonic() > deadline:
            return windows
        time.sleep(0.005)


def test_settlement_corrects_the_token_estimate_to_the_answer(gateway: Any, sessions: Any,
                                                              team: str) -> None:
    limit(sessions, gateway, team, tpm=1_000_000)
    asked = ask(team, max_tokens=400)
    estimate = prompt_count(parse_request(asked)).tokens + 400  # what the producer takes
    result = gateway.complete(asked, timeout=30)
    tokens = result.usage.input_total + result.usage.output
    windows = settled(gateway, team, estimate)
    assert list(windows.values()) == [tokens]  # not the estimate: prompt + 400
    assert tokens < 400


def test_async_requests_over_a_limit_wait_in_their_queue_then_run(
        gateway: Any, sessions: Any, team: str) -> None:
    limit(sessions, gateway, team, rpm=1, window_s=3)
    # Submitted at the start of a window: three submits straddling a window's end would each
    # find room in their own window, and fewer than two would be refused at submit.
    now = gateway.limiter.clock()
    time.sleep(3 - now % 3 + 0.05)
    handles = [gateway.submit(ask(team, lane="async")) for _ in range(3)]  # none refused
    # Watch the windows while they run: each lives one window past its end, so a look after
    # every answer would miss the first ones.
    seen: dict[str, int] = {}
    done = threading.Event()

    def look() -> None:
        for k, v in used(gateway, team).items():
            seen[k] = max(seen.get(k, 0), v)

    def watch() -> None:
        while not done.is_set():
            look()
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = [h.result(timeout=60) for h in handles]
    finally:
        done.set()
        watcher.join()
    # The last window is still there (kept one window past its end), but may have opened
    # after the watcher's last look: a scan of a full Redis outlasts the last request.
    look()
    assert all(r.text for r in results)
    # Three windows of one request each: the two refused at submit were admitted by the
    # worker that took them, each once the window had room, and counted there.
    assert sorted(seen.values()) == [1, 1, 1]
    assert gateway.limiter.refusal_counts()[f"team:{team}:requests"] >= 2
