"""The budget governor end to end: producers → Redis → several real Celery workers → PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from models.db.budgets import ReservationRow, delete_budget, get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.errors import BudgetExceeded, Cancelled, DeadlineExceeded, QueuePaused
from models.domain.request import parse_request
from models.domain.tokens import count_request
from queues.envelope import Envelope, task_id_for
from queues.handle import TaskHandle
from queues.names import QUEUES
from scheduler import governor
from scheduler.beat import GOVERNOR_QUEUE, TICK_TASK
from tests.billed import wait_row
from tests.services import run_token

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url, pool_size=4)
    yield session_factory(engine)
    engine.dispose()


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    """A real worker process on the api queues, returned once it is ready."""
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", "threads",
           "-c", "8", "-Q", "interactive.api,async.api", "-n", name, "--without-heartbeat",
           "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"worker {name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


@pytest.fixture(scope="module")
def extra_workers(integration_env: dict[str, str], celery_worker_proc: Any,
                  tmp_path_factory: Any) -> Iterator[list[tuple[str, Path]]]:
    """Two more worker processes beside the session's, so several workers share the queues."""
    folder = tmp_path_factory.mktemp("budget-workers")
    started = []
    for i in (1, 2):
        name = f"budget-w{i}-{run_token()}@{os.uname().nodename}"
        log = folder / f"w{i}.log"
        started.append((start_worker(integration_env, name, log), name, log))
    yield [(name, log) for _, name, log in started]
    for proc, _, _ in started:
        proc.terminate()
    for proc, _, _ in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def data(feature: str, **kw: Any) -> dict[str, Any]:
    return {"request_id": f"b-{uuid.uuid4().hex}", "team": "budget", "feature": feature,
            "model": "cheap", "max_tokens": 120, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Tell me about {uuid.uuid4().hex[:6]}"}],
            **kw}


def budget(sessions: Any, gateway: Any, scope: str, key: str, hard: str) -> Any:
    with sessions() as s:
        b = set_budget(s, scope, key, "total", hard=Decimal(hard))
        s.commit()
    gateway.admission.invalidate()  # this process's producer sees it at once
    return b


def consumers(app: Any) -> dict[str, set[str]]:
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    return {w: {q["name"] for q in qs} for w, qs in replies.items()}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_64_producers_never_push_a_budget_past_its_limit(gateway: Any, extra_workers: Any,
                                                          sessions: Any) -> None:
    feature = f"race-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "0.004")
    ok: list[Any] = []
    refused: list[BudgetExceeded] = []
    other: list[Exception] = []
    lock = threading.Lock()

    def producer(_: int) -> None:
        for _ in range(5):
            try:
                result = gateway.complete(data(feature), timeout=90)
                with lock:
                    ok.append(result)
            except BudgetExceeded as err:
                with lock:
                    refused.append(err)
            except Exception as exc:  # noqa: BLE001 - collected and asserted empty below
                with lock:
                    other.append(exc)

    try:
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(producer, range(64)))
        assert not other, other[:3]
        assert ok and refused, (len(ok), len(refused))  # driven past the limit
        for err in refused:
            d = err.details
            # No request was refused while settled spend plus open reservations left it room.
            assert Decimal(d["spent"]) + Decimal(d["reserved"]) + Decimal(d["requested"]) \
                > Decimal(d["limit"]), d
        with sessions() as s:
            after = get_budget(s, "feature", feature, "total")
            ledger_sum, rows = s.execute(
                select(func.coalesce(func.sum(LedgerRow.cost), 0), func.count())
                .where(LedgerRow.feature == feature, LedgerRow.outcome == "ok")).one()
            open_left = s.scalar(select(func.count()).select_from(ReservationRow).where(
                ReservationRow.request_id.in_([r.request_id for r in ok]),
                ReservationRow.state != "settled"))
        assert after.reserved == 0 and open_left == 0
        assert after.spent <= after.hard_limit
        assert after.spent == ledger_sum == sum((r.cost for r in ok), Decimal(0))
        assert rows == len(ok)
        assert after.spent > 0
        for name, log in extra_workers:
            assert b"succeeded" in log.read_bytes(), f"{name} served nothing"
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()


def test_feature_limit_refuses_without_pausing_shared_queues(gateway: Any,
                                                             sessions: Any) -> None:
    feature = f"tiny-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "0.00001")
    try:
        with pytest.raises(BudgetExceeded) as err:
            gateway.submit(data(feature))
        assert err.value.details["budget"] == f"feature:{feature}:total"
        assert err.value.details["resets_at"] is None  # a total budget never resets
        with sessions() as s:
            assert not governor.paused_queues(s)
        assert gateway.complete(data("someone-else"), timeout=30).text  # others keep flowing
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()


def test_lane_budget_pauses_every_worker_and_resumes(gateway: Any, extra_workers: Any,
                                                     sessions: Any, integration_env: Any,
                                                     tmp_path: Path) -> None:
    app = gateway.app
    budget(sessions, gateway, "lane", "async", "0.0002")
    late = None
    try:
        with pytest.raises(BudgetExceeded):
            for _ in range(20):
                gateway.complete(data("lane-test", lane="async"), timeout=30)
        with sessions() as s:
            assert set(governor.paused_queues(s)) == {"async.api", "async.gpu"}
        time.sleep(1.1)  # the producer's pause cache
        with pytest.raises(QueuePaused):
            gateway.submit(data("lane-test", lane="async"))
        # The beat job, run by a worker off the governor queue (which no pause touches),
        # applies the durable pause on every worker through remote control.
        app.send_task(TICK_TASK, queue=GOVERNOR_QUEUE, routing_key=GOVERNOR_QUEUE,
                      ignore_result=True)
        wait_for(lambda: all("async.api" not in qs and "interactive.api" in qs
                             for qs in consumers(app).values()), "async.api to be cancelled")
        assert len(consumers(app)) >= 3
        # A worker started during the pause honours it too.
        name = f"budget-late-{run_token()}@{os.uname().nodename}"
        late = start_worker(integration_env, name, tmp_path / "late.log")
        wait_for(lambda: name in consumers(app), "the late worker to answer")
        assert consumers(app)[name] == {"interactive.api", "sluice.governor"}
        # An operator resumes: each worker takes back its own queues, and no others.
        governor.resume(sessions, ["async.api", "async.gpu"], control=app.control)
        wait_for(lambda: all("async.api" in qs for qs in consumers(app).values()),
                 "async.api to come back")
        assert all("async.gpu" not in qs for qs in consumers(app).values())
    finally:
        with sessions() as s:
            delete_budget(s, "lane", "async", "total")
            s.commit()
        governor.resume(sessions, QUEUES, control=app.control)
        if late is not None:
            late.terminate()
            late.wait(timeout=20)


def _envelope(gateway: Any, feature: str, reservation: str | None, **kw: Any) -> Envelope:
    from scheduler.route import decide_route

    req = parse_request(data(feature, **kw))
    route = decide_route(req, gateway.catalogue, gateway.settings.routing)
    return Envelope(request=req, route=route, prompt_tokens=count_request(req),
                    reservation_id=reservation)


def _chat_calls(standin: Any) -> int:
    """Chat completions the stand-in answered."""
    return int(standin.stats()["by_path"].get("/v1/chat/completions", 0))


def _assert_dropped(sessions: Any, standin: Any, calls: int, request_id: str, rid: str,
                    feature: str, code: str) -> None:
    """Never sent to the provider, a $0 row saying why, and its money given back."""
    assert _chat_calls(standin) == calls
    with sessions() as s:
        row = _row(s, request_id)
        assert (row.outcome, row.error_code, row.cost) == ("error", code, 0)
        assert s.get(ReservationRow, rid).state == "released"
        assert get_budget(s, "feature", feature, "total").reserved == 0


def _row(s: Any, request_id: str) -> LedgerRow:
    """The one ledger row of ``request_id``."""
    return s.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).one()


def test_queued_task_of_a_paused_queue_is_not_sent(gateway: Any, sessions: Any) -> None:
    feature = f"second-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "1")
    env = _envelope(gateway, feature, None)
    rid = gateway.admission.reserve(env.request, env.route, Decimal("0.01"))
    env = env.model_copy(update={"reservation_id": rid})
    # Recorded durably but not yet broadcast: the workers still take the queue's tasks.
    governor.pause(sessions, ["interactive.api"], "test: second check")
    try:
        time.sleep(1.2)  # the workers' pause cache
        with pytest.raises(QueuePaused):
            TaskHandle(gateway._send(env)).result(timeout=30)
        with sessions() as s:
            row = _row(s, env.request.request_id)
            assert (row.outcome, row.error_code, row.output) == ("error", "queue_paused", 0)
            assert s.get(ReservationRow, rid).state == "released"
            assert get_budget(s, "feature", feature, "total").reserved == 0
    finally:
        governor.resume(sessions, ["interactive.api"], control=gateway.app.control)
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()


def test_expired_reservation_is_held_again_or_refused_by_the_worker(gateway: Any,
                                                                    sessions: Any) -> None:
    feature = f"expired-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "0.01")
    env = _envelope(gateway, feature, None)
    rid = gateway.admission.reserve(env.request, env.route, Decimal("0.006"))
    with sessions() as s:  # its worker "crashed" and the lease ran out: the governor frees it
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        s.execute(update(ReservationRow).where(ReservationRow.id == rid).values(expires_at=past))
        assert governor.release_expired(s, datetime.now(timezone.utc)) >= 1
        s.commit()
    another = env.request.model_copy(update={"request_id": uuid.uuid4().hex})
    other = gateway.admission.reserve(another, env.route, Decimal("0.01"))  # all the room
    try:
        time.sleep(1.1)  # the workers' budget list
        with pytest.raises(BudgetExceeded):
            TaskHandle(gateway._send(env.model_copy(update={"reservation_id": rid}))
                       ).result(timeout=30)
        with sessions() as s:
            row = _row(s, env.request.request_id)
            assert (row.outcome, row.error_code) == ("error", "budget_exceeded")
        gateway.admission.release(other)
        again = _envelope(gateway, feature, None).model_copy(update={"reservation_id": rid})
        result = TaskHandle(gateway._send(again)).result(timeout=30)  # held again, then paid
        wait_row(sessions, result.request_id)  # the answer comes before its settle
        with sessions() as s:
            after = get_budget(s, "feature", feature, "total")
        assert after.spent == result.cost and after.reserved == 0
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()


def test_a_task_past_its_deadline_is_not_sent_and_gives_its_money_back(gateway: Any,
                                                                       sessions: Any,
                                                                       standin: Any) -> None:
    """Its caller gave up while it sat in the queue: no provider call, a $0 row that says
    why, the reservation released."""
    feature = f"late-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "1")
    env = _envelope(gateway, feature, None)
    rid = gateway.admission.reserve(env.request, env.route, Decimal("0.01"))
    late = env.model_copy(update={"reservation_id": rid, "enqueued_at": time.time() - 40,
                                  "deadline": time.time() - 10})
    calls = _chat_calls(standin)
    try:
        with pytest.raises(DeadlineExceeded) as exc:
            TaskHandle(gateway._send(late)).result(timeout=30)
        assert "not sent to a provider" in exc.value.message and exc.value.retryable
        _assert_dropped(sessions, standin, calls, env.request.request_id, rid, feature,
                        "deadline_exceeded")
        # Sent again (a retry of the errored request, same id): still late, still not run.
        with pytest.raises(DeadlineExceeded):
            TaskHandle(gateway._send(late)).result(timeout=30)
        assert _chat_calls(standin) == calls
        with sessions() as s:
            assert get_budget(s, "feature", feature, "total").reserved == 0
        # The same envelope before its deadline runs and is paid as usual.
        fresh = _envelope(gateway, feature, None).model_copy(
            update={"deadline": time.time() + 60})
        assert TaskHandle(gateway._send(fresh)).result(timeout=30).text
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()


def test_a_cancelled_async_request_is_not_sent_and_gives_its_money_back(gateway: Any,
                                                                       sessions: Any,
                                                                       standin: Any) -> None:
    feature = f"cancel-{uuid.uuid4().hex[:8]}"
    budget(sessions, gateway, "feature", feature, "1")
    env = _envelope(gateway, feature, None, lane="async")
    rid = gateway.admission.reserve(env.request, env.route, Decimal("0.01"))
    calls = _chat_calls(standin)
    gateway.cancel(task_id_for(env.request))
    try:
        with pytest.raises(Cancelled) as exc:
            TaskHandle(gateway._send(env.model_copy(update={"reservation_id": rid}))
                       ).result(timeout=30)
        assert "not sent to a provider" in exc.value.message
        _assert_dropped(sessions, standin, calls, env.request.request_id, rid, feature,
                        "cancelled")
        # Interactive requests are never looked up (their callers hang up instead): a mark
        # on one changes nothing, and it runs and is paid as usual.
        live = _envelope(gateway, feature, None)
        gateway.cancel(task_id_for(live.request))
        assert TaskHandle(gateway._send(live)).result(timeout=30).text
        assert _chat_calls(standin) == calls + 1
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()
