"""Spend that used to escape the ledger or a hard limit, on PostgreSQL and a real worker.

Each test reproduces one leak found in review (issue 16): a fallback spending outside its
reservation, a timed-out or broken attempt the provider bills but the ledger did not, a lease
lapsing while the call still runs, a live run taken over and paid twice, a budget set after
admission, a retry under the same request id holding a second reservation.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import worst_case_cost
from models.domain.errors import BudgetExceeded, SluiceError
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.tokens import count_request
from queues.envelope import Envelope
from queues.handle import TaskHandle
from queues.producer import connect
from scheduler.route import decide_route
from tests.services import run_token
from tests.worker_proc import celery_worker

pytestmark = pytest.mark.integration
#: The worker's heartbeat: a claim is a dead worker's after six missed beats (1.5 s).
HEARTBEAT_S = 0.25
#: The lane's time limit is shorter than a run may take, as when the threads pool, which
#: enforces no Celery limit, ran a call past it: the old claim lease lapsed mid-call.
TIME_LIMIT_S, SOFT_LIMIT_S = 2, 10


@pytest.fixture(scope="module")
def leak_env(integration_env: dict[str, str]) -> dict[str, str]:
    """A broker namespace of this module's own, so its worker's settings apply alone."""
    prefix = f"sgleak{run_token()}:"
    return {**integration_env,
            "SLUICE_BROKER__KEY_PREFIX": prefix, "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
            "SLUICE_TEST_KEY_PREFIX": prefix,
            "SLUICE_BROKER__HEARTBEAT_S": str(HEARTBEAT_S),
            "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": "60",
            "SLUICE_LANES__INTERACTIVE__TIME_LIMIT_S": str(TIME_LIMIT_S),
            "SLUICE_LANES__INTERACTIVE__SOFT_TIME_LIMIT_S": str(SOFT_LIMIT_S),
            "SLUICE_LANES__INTERACTIVE__QUEUE_TIMEOUT_S": "60",
            "SLUICE_PROVIDERS__TIMEOUT_S": "1",
            "SLUICE_PROVIDERS__FALLBACKS": '{"gpt-4o-mini": ["gpt-4o"]}'}


@pytest.fixture(scope="module")
def leak_gateway(leak_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    """A real worker process and a producer on the module's namespace."""
    log = tmp_path_factory.mktemp("leaks") / "worker.log"
    with celery_worker(leak_env, log, queues="interactive.api,async.api",
                       name=f"leaks-{run_token()}"):
        gw = connect(load_settings(dict(leak_env)))
        yield gw
        gw.close()


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=4)
    yield session_factory(engine)
    engine.dispose()


def data(feature: str, **kw: Any) -> dict[str, Any]:
    return {"request_id": f"leak-{uuid.uuid4().hex}", "team": "leaks", "feature": feature,
            "max_tokens": 60, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Tell me about {uuid.uuid4().hex[:6]}"}],
            **kw}


def budget(sessions: Any, gateway: Any, feature: str, hard: Decimal) -> None:
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=hard)
        s.commit()
    gateway.admission.invalidate()


def worst(request: dict[str, Any], model: str) -> Decimal:
    req = parse_request(request)
    return worst_case_cost(count_request(req), req.max_tokens, load_catalogue().get(model))


def calls(standin: Any, path: str = "/v1/chat/completions") -> int:
    return int(standin.stats()["by_path"].get(path, 0))


def ledger_row(sessions: Any, request_id: str) -> LedgerRow:
    with sessions() as s:
        return s.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).one()


def attempts(sessions: Any, request_id: str) -> list[AttemptRow]:
    with sessions() as s:
        return list(s.scalars(select(AttemptRow).where(AttemptRow.request_id == request_id)
                              .order_by(AttemptRow.id)))


def open_reservations(sessions: Any, request_id: str) -> int:
    with sessions() as s:
        return len(s.scalars(select(ReservationRow.id).where(
            ReservationRow.request_id == request_id, ReservationRow.state == "open")).all())


def settled_spend(sessions: Any, feature: str) -> tuple[Decimal, Decimal, Decimal]:
    with sessions() as s:
        b = get_budget(s, "feature", feature, "total")
        assert b is not None
        return b.spent, b.reserved, b.hard_limit


def wait_final(sessions: Any, request_id: str, timeout: float = 30.0) -> LedgerRow:
    deadline = time.time() + timeout
    while True:
        r = ledger_row(sessions, request_id)
        if r.outcome != "running":
            return r
        assert time.time() < deadline, f"{request_id} stayed running"
        time.sleep(0.1)


def test_a_fallback_the_budget_cannot_hold_is_refused_before_anything_is_sent(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Room for the cheap model, not for its flagship fallback: refused at admission (it used
    to be admitted, and the fallback spent 16x the limit)."""
    feature = f"fb-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="gpt-4o-mini")
    cheap, dear = worst(d, "gpt-4o-mini"), worst(d, "gpt-4o")
    assert dear > 2 * cheap
    budget(sessions, leak_gateway, feature, cheap * 2)
    before = calls(standin)
    standin.script_faults(["500"] * 3, path="openai", model="gpt-4o-mini")
    try:
        with pytest.raises(BudgetExceeded) as err:
            leak_gateway.complete(d, timeout=30)
        assert err.value.details["budget"] == f"feature:{feature}:total"
        assert calls(standin) == before
    finally:
        standin.reset()


def test_a_fallback_spends_only_inside_its_reservation(leak_gateway: Any, sessions: Any,
                                                       standin: Any) -> None:
    """The cheap model fails; the fallback answers within the reservation of the dearest model
    the request can reach; spend never passes the hard limit."""
    feature = f"fb2-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="gpt-4o-mini")
    hard = worst(d, "gpt-4o") * Decimal("1.2")  # one flagship worst case, and a little
    budget(sessions, leak_gateway, feature, hard)
    standin.script_faults(["500"] * 3, path="openai", model="gpt-4o-mini")
    try:
        result = leak_gateway.complete(d, timeout=30)
    finally:
        standin.reset()
    assert result.model == "gpt-4o"
    r = wait_final(sessions, d["request_id"])
    spent, reserved, limit = settled_spend(sessions, feature)
    assert spent == r.cost <= limit and reserved == 0
    kinds = [(a.model, a.kind, a.outcome, a.billing) for a in attempts(sessions, d["request_id"])]
    assert kinds == [("gpt-4o-mini", "call", "refused", "none"),
                     ("gpt-4o-mini", "retry", "refused", "none"),
                     ("gpt-4o-mini", "retry", "refused", "none"),
                     ("gpt-4o", "fallback", "ok", "exact")]
    # A second one no longer fits: refused, never sent.
    with pytest.raises(BudgetExceeded):
        leak_gateway.complete(data(feature, model="gpt-4o-mini"), timeout=30)


def test_timed_out_attempts_are_charged_at_an_estimate_and_held_against_the_budget(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """A provider timeout: the provider had the request and may bill it. Each attempt is a
    ledger fact charged at its worst case, marked estimated; the request costs their sum."""
    feature = f"to-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5")
    w = worst(d, "claude-haiku-4-5")
    budget(sessions, leak_gateway, feature, w * 10)
    standin.script_faults(["timeout=3"] * 3, path="anthropic", model="claude-haiku-4-5")
    try:
        with pytest.raises(SluiceError):
            leak_gateway.complete(d, timeout=30)
    finally:
        standin.reset()
    r = wait_final(sessions, d["request_id"])
    rows = attempts(sessions, d["request_id"])
    assert [(a.outcome, a.billing) for a in rows] == [("timeout", "estimated")] * 3
    assert r.attempts == 3 and r.cost == r.estimated_cost == 3 * w
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (3 * w, 0)
    assert open_reservations(sessions, d["request_id"]) == 0


def test_a_retry_the_budget_cannot_cover_is_refused_naming_the_budget(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """After one billed timeout, the retry needs that charge plus its own worst case held: a
    budget with room for one and a half attempts refuses the retry, and spend stays inside."""
    feature = f"tor-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5")
    w = worst(d, "claude-haiku-4-5")
    budget(sessions, leak_gateway, feature, w * Decimal("1.5"))
    standin.script_faults(["timeout=3"] * 3, path="anthropic", model="claude-haiku-4-5")
    before = calls(standin, "/v1/messages")
    try:
        with pytest.raises(BudgetExceeded) as err:
            leak_gateway.complete(d, timeout=30)
    finally:
        standin.reset()
    assert err.value.details["budget"] == f"feature:{feature}:total"
    assert calls(standin, "/v1/messages") - before <= 1
    r = wait_final(sessions, d["request_id"])
    assert (r.error_code, r.attempts, r.cost) == ("budget_exceeded", 1, w)
    spent, reserved, limit = settled_spend(sessions, feature)
    assert spent == w <= limit and reserved == 0


def test_a_stream_broken_after_its_first_piece_is_charged_what_was_received(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    feature = f"cut-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5", max_tokens=200)
    budget(sessions, leak_gateway, feature, Decimal(1))
    standin.script_faults(["cut=6"], path="anthropic", model="claude-haiku-4-5")
    try:
        with pytest.raises(SluiceError):
            leak_gateway.submit(d, stream=True).result(timeout=30)
    finally:
        standin.reset()
    r = wait_final(sessions, d["request_id"])
    (a,) = attempts(sessions, d["request_id"])
    assert (a.outcome, a.billing, a.stream) == ("broken_stream", "estimated", True)
    assert a.input_tokens > 0 and a.output_tokens > 0
    assert 0 < r.cost == r.estimated_cost == a.cost < worst(d, "claude-haiku-4-5")
    assert settled_spend(sessions, feature)[0] == r.cost


def test_the_lane_time_limit_abandons_a_slow_call_and_charges_it(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """The threads pool enforces no Celery limit: the run's own deadline abandons a stream
    still generating at the lane's soft limit, charges what arrived, and sends no more."""
    feature = f"slow-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5", max_tokens=400,
             messages=[{"role": "user", "content": "Write a very long story " * 20}])
    budget(sessions, leak_gateway, feature, Decimal(1))
    standin.script_faults(["slow=100"] * 3, path="anthropic", model="claude-haiku-4-5")
    t0 = time.monotonic()
    try:
        with pytest.raises(SluiceError) as err:
            leak_gateway.submit(d, stream=True).result(timeout=60)
    finally:
        standin.reset()
    assert time.monotonic() - t0 < SOFT_LIMIT_S + 5
    assert err.value.code in ("provider_permanent", "time_limit")
    r = wait_final(sessions, d["request_id"])
    rows = attempts(sessions, d["request_id"])
    assert len(rows) == 1 and rows[0].outcome == "abandoned" and rows[0].billing == "estimated"
    assert r.cost == rows[0].cost > 0 and r.estimated_cost == r.cost


def test_a_live_run_renews_its_lease_and_is_never_taken_over(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """A run longer than the lane's time limit: its claim and reservation are renewed by the
    heartbeat, and a second delivery of the same task (the sweeper's re-send, a redelivery)
    waits for it instead of calling the provider again."""
    feature = f"live-{uuid.uuid4().hex[:8]}"
    budget(sessions, leak_gateway, feature, Decimal(1))
    d = data(feature, model="claude-haiku-4-5", max_tokens=45,
             messages=[{"role": "user", "content": "Write a long story " * 20}])
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    tokens = count_request(req)
    rid = leak_gateway.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
    # Streamed, 45 tokens at 100 ms: about 4.5 s, past the lane's 2 s, inside its soft 10 s.
    env = Envelope(request=req, route=route, prompt_tokens=tokens, reservation_id=rid,
                   stream=True)
    before = calls(standin, "/v1/messages")
    standin.script_faults(["slow=100"], path="anthropic", model="claude-haiku-4-5")
    first = TaskHandle(leak_gateway._send(env))
    deadline = time.time() + 20
    while ledger_row_or_none(sessions, req.request_id) is None:
        assert time.time() < deadline
        time.sleep(0.05)
    with sessions() as s:
        start_exp = s.get(ReservationRow, rid).expires_at
    time.sleep(TIME_LIMIT_S + 1.0)  # past the old lease: the claim looked stale then
    running = ledger_row(sessions, req.request_id)
    assert running.outcome == "running", "the slow call should still be running"
    copy = threading.Thread(target=lambda: leak_gateway._send(env))
    copy.start()
    copy.join()
    result = first.result(timeout=60)
    assert result.text
    time.sleep(TIME_LIMIT_S + 1.0)  # the copy had its chance to run
    assert calls(standin, "/v1/messages") - before == 1, "a live run was taken over"
    r = wait_final(sessions, req.request_id)
    assert r.outcome == "ok" and r.heartbeat_at > running.created_at
    with sessions() as s:
        res = s.get(ReservationRow, rid)
        assert res.state == "settled" and res.expires_at > start_exp
    assert len(attempts(sessions, req.request_id)) == 1


def ledger_row_or_none(sessions: Any, request_id: str) -> LedgerRow | None:
    with sessions() as s:
        return s.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).first()


def test_a_budget_set_after_admission_stops_the_request_at_the_second_check(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Admitted with no budget; a hard limit with no room is set before a worker reaches it:
    the worker's second check applies it (it used to look only at the budgets of admission)."""
    feature = f"late-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5")
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    budget(sessions, leak_gateway, f"other-{feature}", Decimal(1))  # some budget exists
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req),
                   reservation_id=None)
    budget(sessions, leak_gateway, feature, worst(d, "claude-haiku-4-5") / 2)
    time.sleep(1.2)  # the worker's budget list
    before = calls(standin, "/v1/messages")
    with pytest.raises(BudgetExceeded):
        TaskHandle(leak_gateway._send(env)).result(timeout=30)
    assert calls(standin, "/v1/messages") == before


def test_a_budget_set_after_the_reservation_joins_it_at_the_second_check(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """Reserved against the team's budget only; a feature budget set meanwhile is held too,
    and the settled spend lands on it."""
    feature = f"late2-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5", team=f"t-{feature}")
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    with sessions() as s:
        set_budget(s, "team", req.team, "total", hard=Decimal(1))
        s.commit()
    leak_gateway.admission.invalidate()
    amount = worst(d, "claude-haiku-4-5")
    rid = leak_gateway.admission.reserve(req, route, amount)
    budget(sessions, leak_gateway, feature, Decimal(1))
    time.sleep(1.2)
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req),
                   reservation_id=rid)
    result = TaskHandle(leak_gateway._send(env)).result(timeout=30)
    wait_final(sessions, req.request_id)
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (result.cost, 0)
    with sessions() as s:
        team = s.scalars(select(BudgetRow).where(BudgetRow.scope == "team",
                                                 BudgetRow.key == req.team)).one()
        assert (team.spent, team.reserved) == (result.cost, 0)


def test_a_retry_under_the_same_request_id_holds_one_reservation(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    """An SDK retry with the same request id: billed once, and no second reservation left
    open until its lease runs out (which refused other requests meanwhile)."""
    feature = f"same-{uuid.uuid4().hex[:8]}"
    d = data(feature, model="claude-haiku-4-5")
    budget(sessions, leak_gateway, feature, Decimal(1))
    first = leak_gateway.complete(d, timeout=30)
    again = leak_gateway.complete(d, timeout=30)
    assert again.text == first.text
    wait_final(sessions, d["request_id"])
    deadline = time.time() + 10
    while open_reservations(sessions, d["request_id"]):
        assert time.time() < deadline, "the retry's reservation was left open"
        time.sleep(0.1)
    spent, reserved, _ = settled_spend(sessions, feature)
    assert (spent, reserved) == (first.cost, 0)
