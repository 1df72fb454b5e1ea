"""The pipelined PostgreSQL final write leaves exactly what the statement-by-statement one does."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import attempts, final_pg, ledger
from models.db.attempts import AttemptRow
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from workers.attempts import _finish_portable


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def _row(rid: str) -> dict[str, Any]:
    return {"request_id": rid, "org": "default", "team": "fw", "feature": "final", "user": "u1",
            "lane": "interactive", "tier": "cheap", "provider": "openai", "model": "gpt-4o-mini",
            "backend": "api", "route_reason": "test", "route_score": None, "task_type": None,
            "rung": None, "outcome": "ok", "error_code": None, "cache_hit": False,
            "batch": False, "input_uncached": 12, "cache_read": 0, "cache_write_5m": 0,
            "cache_write_1h": 0, "output": 7, "reasoning": 0, "cost": Decimal("0.5"),
            "baseline_cost": Decimal("0.0009"), "list_cost": Decimal("0.0002"),
            "price_version": "v1", "latency_ms": 3.0, "queued_ms": 1.0, "provider_ms": 2.0,
            "prompt_hash": "h", "deployment": "", "purpose": "serve", "volatile_prefix": False}


def _attempt(s: Any, rid: str, run: str, worst: str) -> int:
    return attempts.begin(s, {"request_id": rid, "run": run, "org": "default", "team": "fw",
                              "feature": "final", "provider": "openai", "model": "gpt-4o-mini",
                              "kind": "call", "worst_case": Decimal(worst)})


def _setup(sessions: Any, *, finished: bool, final: str) -> tuple[str, dict[str, Any] | None]:
    """A claimed request with: a settled old attempt, an ended unsettled timeout, a dead run's
    ``sent`` attempt and this run's answer (``final``: sent | missing | none)."""
    rid = f"fw-{uuid.uuid4().hex}"
    with sessions() as s:
        skeleton = dict(_row(rid), outcome="running", cost=Decimal(0),
                        created_at=datetime.now(timezone.utc))
        ledger.record(s, skeleton)
        old = _attempt(s, rid, "r0", "0.004")
        attempts.end(s, old, outcome="ok", billing="exact", cost=Decimal("0.003"))
        attempts.settle_all(s, rid)
        timed_out = _attempt(s, rid, "r1", "0.002")
        attempts.end(s, timed_out, outcome="timeout", billing="estimated", cost=Decimal("0.002"))
        _attempt(s, rid, "r0", "0.0015")  # the dead run's call, still ``sent``
        aid = _attempt(s, rid, "r1", "0.001") if final == "sent" else None
        if final == "missing":
            aid = int(s.scalar(select(func.max(AttemptRow.id)))) + 10_000
        if finished:
            ledger.finish(s, dict(_row(rid), outcome="ok", cost=Decimal("0.009")))
        s.commit()
    values = None if aid is None else {"attempt_id": aid, "cost": "0.0007", "input_tokens": 12,
                                       "output_tokens": 7, "billing": "exact", "batch": False}
    return rid, values


def _state(sessions: Any, rid: str) -> tuple[Any, ...]:
    with sessions() as s:
        rows = [(a.run, a.kind, a.outcome, a.billing, a.cost, a.worst_case, a.input_tokens,
                 a.output_tokens, a.error_code, a.settled, a.finished_at is not None)
                for a in attempts.of_request(s, rid)]
        led = s.scalars(select(LedgerRow).where(LedgerRow.request_id == rid)).one()
        return (rows, led.outcome, led.cost, led.estimated_cost, led.attempts, led.output,
                led.user)


@pytest.mark.parametrize("finished", [False, True])
@pytest.mark.parametrize("final", ["sent", "missing", "none"])
def test_pipelined_final_write_matches_the_portable_one(sessions: Any, finished: bool,
                                                        final: str) -> None:
    outcomes = []
    for pipelined in (True, False):
        rid, values = _setup(sessions, finished=finished, final=final)
        row = dict(_row(rid), outcome="ok" if final != "none" else "error")
        with sessions() as s:
            assert final_pg.applies(s)
            done = (final_pg.finish if pipelined else _finish_portable)(s, row, values)
            s.commit()
        outcomes.append((done, _state(sessions, rid),
                         {k: row.get(k) for k in ("cost", "estimated_cost", "attempts")}))
    assert outcomes[0] == outcomes[1]
    (first, owed, owed_estimated), (rows, outcome, cost, estimated, n, _, _), _ = outcomes[0]
    assert first is not finished and outcome == ("ok" if final != "none" else "error") \
        or finished
    # Every attempt ended and settled once; the dead run's call charged at its worst case.
    assert all(r[9] for r in rows) and not any(r[2] == "sent" for r in rows)
    assert [r[2] for r in rows][2] == "lost"
    answered = Decimal("0.0007") if final != "none" else Decimal(0)
    settled_now = Decimal("0.002") + Decimal("0.0015") + answered
    assert owed == settled_now and owed_estimated == Decimal("0.0035")
    if not finished:
        assert (cost, estimated, n) == (Decimal("0.003") + settled_now, Decimal("0.0035"),
                                        4 if final != "none" else 3)
    if final == "missing":
        assert rows[-1][:3] == ("recovered", "call", "ok")


def test_a_failed_pipeline_is_a_ledger_error_and_the_session_rolls_back(sessions: Any) -> None:
    # final_write keeps the row in the outbox on a LedgerError: a raw driver error would
    # escape it and lose the paid answer's row.
    from models.domain.errors import LedgerError

    rid, values = _setup(sessions, finished=False, final="sent")
    with sessions() as s:
        with pytest.raises(LedgerError, match=rid):
            final_pg.finish(s, dict(_row(rid), no_such_column=1), values)
        s.rollback()
        assert s.scalar(select(LedgerRow.outcome).where(LedgerRow.request_id == rid)) \
            == "running"
        first, _, _ = final_pg.finish(s, dict(_row(rid)), values)
        s.commit()
    assert first
