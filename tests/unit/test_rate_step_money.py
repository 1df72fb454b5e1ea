"""The rate step and the money around it: a retry it refuses leaves the first run's reservation
as it was, and a refusal after an admission that left the step to the producer releases."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db.budgets import ReservationRow, set_budget
from models.db.engine import make_engine, session_factory
from models.domain.errors import RateLimited
from models.domain.request import parse_request
from models.domain.result import Route
from scheduler.admission import SqlAdmission

ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive")


def _refuse() -> None:
    raise RateLimited("full", limit="team:t1", retry_after_s=1.0)


def test_a_retry_the_rate_limit_refuses_leaves_the_first_runs_reservation_alone(
        tmp_path: Path) -> None:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        set_budget(s, "team", "t1", "total", hard=Decimal("5"))
        s.commit()
    adm = SqlAdmission(sessions, lease_s={"interactive": 60})
    req = parse_request({"request_id": "same", "team": "t1", "feature": "f",
                         "messages": [{"role": "user", "content": "x"}]})
    first = adm.reserve(req, ROUTE, Decimal("0.1"))

    def held() -> tuple[Decimal, Any]:
        with sessions() as s:
            row = s.scalars(select(ReservationRow).where(ReservationRow.id == first)).one()
            return row.amount, row.expires_at

    before = held()
    with pytest.raises(RateLimited):  # the same request again, asking more, over its limit
        adm.reserve_once(req, ROUTE, Decimal("0.4"), within=_refuse)
    assert held() == before  # neither grown to 0.4 nor renewed
    engine.dispose()


def test_a_rate_refusal_the_producer_runs_itself_releases_the_reservation() -> None:
    from models.domain.settings import Settings
    from queues.producer import Gateway

    released: list[str] = []

    class Admission:  # takes the money, leaves the step to the producer
        def reserve(self, request: Any, route: Any, amount: Decimal, within: Any = None) -> str:
            return "r1"

        def release(self, rid: str) -> None:
            released.append(rid)

    class Limiter:  # one window, always full
        def charges(self, request: Any, route: Any, tokens: int) -> list[str]:
            return ["team:t1"]

        def acquire_charges(self, charges: list[str]) -> Any:
            _refuse()

        def refund(self, grant: Any) -> None:
            pass

        def count_refusal(self, name: str, kind: str) -> None:
            pass

    gw = Gateway(Settings(), admission=Admission(), limiter=Limiter())
    with pytest.raises(RateLimited):
        gw.submit({"team": "t1", "feature": "f", "model": "cheap",
                   "messages": [{"role": "user", "content": "x"}]})
    assert released == ["r1"]


def test_an_embedding_retry_whose_send_fails_never_releases_the_first_runs_money(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import queues.embeddings as embeddings
    from models.domain.errors import BrokerError
    from models.domain.settings import Settings
    from queues.producer import Gateway

    released: list[str] = []

    class Admission:  # the same request id's first run still holds r1
        def reserve_once(self, request: Any, route: Any, amount: Decimal,
                         within: Any = None) -> tuple[str, bool]:
            return "r1", True

        def release(self, rid: str) -> None:
            released.append(rid)

    def broker_down(*args: Any, **kwargs: Any) -> Any:
        raise BrokerError("the broker is away")

    monkeypatch.setattr(embeddings, "_send", broker_down)
    gw = Gateway(Settings(), admission=Admission())
    with pytest.raises(BrokerError):
        gw.embed({"request_id": "e1", "team": "t1", "feature": "f", "input": "a lamp",
                  "model": "text-embedding-3-small", "cache": {"mode": "bypass"}})
    assert released == []
