"""Budget admission on PostgreSQL: model check, 64 threads, rollover, alerts, failing closed."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import select, text

from models.db.budgets import (
    AlertRow,
    BudgetRow,
    PauseRow,
    ReservationRow,
    delete_budget,
    get_budget,
    set_budget,
)
from models.db.engine import make_engine, session_factory
from models.domain.errors import BudgetExceeded, LedgerError
from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import Settings
from scheduler import governor
from scheduler.admission import AdmissionConfig, SqlAdmission, build_admission
from scheduler.governor import build_pause_book
from tests.unit.test_budget_admission import machine_for

pytestmark = pytest.mark.integration
ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive")


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url, pool_size=4)  # PostgreSQL's connection slots are shared
    yield session_factory(engine)
    engine.dispose()


def _req(feature: str, **kw: Any) -> Any:
    return parse_request({"team": "budget-tests", "feature": feature,
                          "messages": [{"role": "user", "content": "x"}], **kw})


def _budget(sessions: Any, scope: str, key: str, hard: str, window: str = "total",
            **kw: Any) -> Any:
    with sessions() as s:
        b = set_budget(s, scope, key, window, hard=Decimal(hard), **kw)
        s.commit()
    return b


def test_admission_matches_the_model_on_postgres(sessions: Any) -> None:
    try:
        run_state_machine_as_test(machine_for(sessions),
                                  settings=settings(max_examples=20, stateful_step_count=30,
                                                    deadline=None))
    finally:
        with sessions() as s:
            for t in ("budget_alerts", "pauses", "reservations", "budgets"):
                s.execute(text(f"DELETE FROM {t}"))
            s.commit()


def test_64_threads_never_overshoot_and_refuse_only_when_full(sessions: Any) -> None:
    feature = f"race-{uuid.uuid4().hex[:8]}"
    _budget(sessions, "feature", feature, "0.05")
    adm = SqlAdmission(sessions, lease_s={"interactive": 60},
                       config=AdmissionConfig(pool_size=8))
    req = _req(feature)
    amount = Decimal("0.000737")  # 0.05 / 0.000737 is not whole: the last one cannot fit
    refusals: list[dict[str, Any]] = []
    settled: list[Decimal] = []
    lock = threading.Lock()

    def producer(i: int) -> None:
        for j in range(12):
            try:  # distinct requests (one request id holds one reservation)
                rid = adm.reserve(req.model_copy(update={"request_id": f"r{i}-{j}"}), ROUTE,
                                  amount)
            except BudgetExceeded as err:
                with lock:
                    refusals.append(err.details)
                continue
            assert rid is not None
            if (i + j) % 3 == 0:
                assert adm.release(rid)
            else:
                actual = amount * (i % 7 + 3) / 10  # 30 % to 90 % of the worst case
                assert adm.settle(rid, actual)
                with lock:
                    settled.append(actual)

    try:
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(producer, range(64)))
        with sessions() as s:
            b = get_budget(s, "feature", feature, "total")
            states = dict(s.execute(text("SELECT state, count(*) FROM reservations "
                                         "WHERE budget_ids = :i GROUP BY state"),
                                    {"i": str(b.id)}).all())
        assert b is not None and b.reserved == 0
        assert b.spent == sum(settled, Decimal(0)) <= b.hard_limit
        assert refusals, "the budget was never driven to its limit"
        for d in refusals:
            # Refused only while settled spend plus open reservations left no room for it.
            assert Decimal(d["spent"]) + Decimal(d["reserved"]) + amount > Decimal(d["limit"])
        assert states.get("settled", 0) == len(settled) and "open" not in states
    finally:
        adm.close()


def test_rollover_restarts_spend_and_resumes_budget_pauses(sessions: Any) -> None:
    # A deployment-wide lane budget: the one kind whose hard limit pauses shared queues. It
    # starts from the lane's spend this hour (other tests'): the limit leaves $0.001 of room.
    first = _budget(sessions, "lane", "interactive", "1", window="hourly")
    b = _budget(sessions, "lane", "interactive", str(first.spent + Decimal("0.001")),
                window="hourly")
    clock = [datetime.now(timezone.utc)]
    adm = SqlAdmission(sessions, lease_s={"interactive": 60}, clock=lambda: clock[0],
                       pauses=build_pause_book(Settings(), sessions))
    req = _req("roll", org=f"org-{uuid.uuid4().hex[:8]}")
    try:
        assert adm.settle(adm.reserve(req, ROUTE, Decimal("0.0009")), Decimal("0.0009"))
        with pytest.raises(BudgetExceeded) as err:
            adm.reserve(req, ROUTE, Decimal("0.0005"))
        assert err.value.details["resets_at"] == b.resets_at.isoformat()
        with sessions() as s:
            assert sorted(governor.paused_queues(s)) == ["interactive.api", "interactive.gpu"]
        clock[0] = b.resets_at + timedelta(seconds=1)  # the hour is over
        assert adm.reserve(req, ROUTE, Decimal("0.0005")) is not None  # rolled on the spot
        with sessions() as s:
            fresh = get_budget(s, "lane", "interactive", "hourly")
            assert fresh.spent == 0 and fresh.reserved == Decimal("0.0005")
            assert (fresh.window_start, fresh.resets_at) == (b.resets_at,
                                                             b.resets_at + timedelta(hours=1))
            assert not s.scalars(select(PauseRow).where(PauseRow.budget_id == b.id)).all()
    finally:
        adm.close()
        with sessions() as s:
            delete_budget(s, "lane", "interactive", "hourly")
            s.commit()


def test_expired_reservations_are_released_by_the_tick(sessions: Any) -> None:
    feature = f"crash-{uuid.uuid4().hex[:8]}"
    _budget(sessions, "feature", feature, "1")
    adm = SqlAdmission(sessions, lease_s={"interactive": 0},
                       config=AdmissionConfig(lease_margin_s=0))
    rid = adm.reserve(_req(feature), ROUTE, Decimal("0.4"))
    report = governor.tick(sessions, now=datetime.now(timezone.utc) + timedelta(seconds=1),
                           post=None)
    assert report["expired"] >= 1
    with sessions() as s:
        assert get_budget(s, "feature", feature, "total").reserved == 0
        assert s.get(ReservationRow, rid).state == "expired"
    assert adm.release(rid) is False  # the crashed worker's late release does nothing
    adm.close()


def test_soft_alert_once_per_window_with_webhook(sessions: Any) -> None:
    got: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    feature = f"soft-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _budget(sessions, "feature", feature, "1", soft=Decimal("0.5"), webhook_url=url)
    adm = build_admission(Settings(), sessions)
    try:
        for _ in range(3):  # crosses 0.5 on the second, stays above on the third
            assert adm.settle(adm.reserve(_req(feature), ROUTE, Decimal("0.3")), Decimal("0.3"))
        governor.tick(sessions)
        governor.tick(sessions)
        with sessions() as s:
            alerts = s.scalars(select(AlertRow).join(BudgetRow).where(
                BudgetRow.key == feature)).all()
        assert [(a.kind, a.delivered_at is not None) for a in alerts] == [("soft", True)]
        assert len(got) == 1 and got[0]["kind"] == "soft"
        assert got[0]["budget"] == f"feature:{feature}:total" and got[0]["spent"] == "0.9"
        assert got[0]["org"] == "default"
    finally:
        adm.close()
        server.shutdown()


def test_unreachable_ledger_fails_closed() -> None:
    url = "postgresql://postgres@127.0.0.1:9/nowhere"  # nothing listens on port 9
    settings_ = Settings(database={"url": url})
    bad = session_factory(make_engine(url))
    adm, book = build_admission(settings_, bad), build_pause_book(settings_, bad)
    with pytest.raises(LedgerError) as err:
        adm.reserve(_req("any"), ROUTE, Decimal("0.01"))
    assert "budget admission refused" in err.value.message
    assert "nothing was dispatched" in err.value.message
    with pytest.raises(LedgerError):
        book.paused("interactive.api")
    adm.close()
