"""The GPU worker's group-committed claim and attempt rows on PostgreSQL: one statement for
requests that arrive together, each caller told exactly what its own write would have said."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db import attempts, ledger
from models.db.attempts import AttemptRow
from models.db.engine import autocommit_engine, make_engine
from models.db.tables import LedgerRow


@pytest.fixture(scope="module")
def engines(pg_url: str) -> Iterator[tuple[Any, Any]]:
    base = make_engine(pg_url, pool_size=2)
    fast = autocommit_engine(base, 2)
    yield base, fast
    fast.dispose()
    base.dispose()


def _claim_row(rid: str) -> dict[str, Any]:
    return {"request_id": rid, "org": "default", "team": "gc", "feature": "group", "user": "u",
            "lane": "interactive", "tier": "cheap", "provider": "vllm",
            "model": "sluice-tiny-llama", "backend": "gpu", "route_reason": "test",
            "route_score": None, "task_type": None, "rung": None, "outcome": "running",
            "error_code": None, "cache_hit": False, "batch": False, "input_uncached": 0,
            "cache_read": 0, "cache_write_5m": 0, "cache_write_1h": 0, "output": 0,
            "reasoning": 0, "cost": Decimal(0), "baseline_cost": Decimal(0),
            "list_cost": Decimal(0), "price_version": "", "latency_ms": 0.0, "queued_ms": 0.0,
            "provider_ms": 0.0, "prompt_hash": "h", "deployment": "", "purpose": "serve",
            "volatile_prefix": False}


def test_claim_many_claims_each_new_id_once(engines: tuple[Any, Any]) -> None:
    _, fast = engines
    taken, fresh = f"gc-{uuid.uuid4().hex}", f"gc-{uuid.uuid4().hex}"
    assert ledger.claim_fast(fast, _claim_row(taken))
    other = f"gc-{uuid.uuid4().hex}"
    got = ledger.claim_fast_many(fast, [_claim_row(taken), _claim_row(fresh),
                                        _claim_row(fresh), _claim_row(other)])
    # the row already there is not claimed again; a copy in the same batch loses to its first
    assert got == [False, True, False, True]
    with fast.connect() as conn:
        n = conn.execute(select(LedgerRow.request_id).where(
            LedgerRow.request_id.in_([taken, fresh, other]))).all()
    assert len(n) == 3


def _values(rid: str, worst: str) -> dict[str, Any]:
    return {"request_id": rid, "run": "r1", "org": "default", "team": "gc", "feature": "group",
            "provider": "vllm", "model": "sluice-tiny-llama", "deployment": "", "kind": "call",
            "stream": False, "batch": False, "worst_case": Decimal(worst)}


def test_begin_many_returns_each_attempts_own_id_in_order(engines: tuple[Any, Any]) -> None:
    _, fast = engines
    rids = [f"gc-{uuid.uuid4().hex}" for _ in range(20)]
    with fast.connect() as conn:
        ids = attempts.begin_many(conn, [_values(r, f"0.{i + 1:04d}")
                                         for i, r in enumerate(rids)])
    assert len(set(ids)) == 20
    with fast.connect() as conn:
        rows = dict(conn.execute(select(AttemptRow.id, AttemptRow.request_id).where(
            AttemptRow.id.in_(ids))).all())
        worst = dict(conn.execute(select(AttemptRow.id, AttemptRow.worst_case).where(
            AttemptRow.id.in_(ids))).all())
    assert [rows[i] for i in ids] == rids
    assert [worst[i] for i in ids] == [Decimal(f"0.{i + 1:04d}") for i in range(20)]
    with fast.connect() as conn:
        outcomes = {o for (o,) in conn.execute(select(AttemptRow.outcome).where(
            AttemptRow.id.in_(ids)))}
    assert outcomes == {"sent"}


def test_runtime_claims_and_attempts_of_a_burst_share_statements(pg_url: str) -> None:
    """Through WorkerRuntime: 32 threads at once, every claim and attempt id its own."""
    from models.domain.settings import load_settings
    from workers.runtime import build_runtime

    settings = load_settings({"SLUICE_DATABASE__URL": pg_url})
    rt = build_runtime(settings, admission=None, cache=None)
    try:
        rids = [f"gc-{uuid.uuid4().hex}" for _ in range(32)]
        start = threading.Barrier(32)

        def one(rid: str) -> tuple[str, str, int | None]:
            start.wait(5)
            state = rt.claim(_claim_row(rid), lease_s=30)
            again = rt.claim(_claim_row(rid), lease_s=30)
            return state, again, rt.begin_attempt(_values(rid, "0.01"))

        with ThreadPoolExecutor(32) as pool:
            out = list(pool.map(one, rids))
        assert [o[0] for o in out] == ["claimed"] * 32
        assert all(o[1] != "claimed" for o in out)  # a second claim never wins
        ids = [o[2] for o in out]
        assert None not in ids and len(set(ids)) == 32
        with rt.session() as s:
            owner = dict(s.execute(select(AttemptRow.id, AttemptRow.request_id).where(
                AttemptRow.id.in_(ids))).all())
        assert [owner[i] for i in ids] == rids
        assert max(rt._claims.sizes + rt._attempts.sizes) > 1  # some writes were shared
    finally:
        rt.close()


def test_a_refused_batch_is_written_alone_and_a_broken_one_is_not(
        engines: tuple[Any, Any]) -> None:
    """An attempt the database refuses (NOT NULL) fails the batch statement, which wrote
    nothing: the runtime then writes each alone. A lost connection is not retried so."""
    from sqlalchemy.exc import OperationalError

    from workers.ledger_writes import refused, write_attempts

    _, fast = engines
    good, bad = _values(f"gc-{uuid.uuid4().hex}", "0.01"), dict(
        _values(f"gc-{uuid.uuid4().hex}", "0.01"), kind=None)
    with pytest.raises(Exception) as caught, fast.connect() as conn:
        write_attempts(conn, [(good, None), (bad, None)])
    assert refused(caught.value)
    with fast.connect() as conn:
        assert conn.execute(select(AttemptRow.id).where(
            AttemptRow.request_id == good["request_id"])).first() is None  # nothing written
    lost = OperationalError("COMMIT", {}, Exception("server closed the connection"))
    lost.connection_invalidated = True
    assert not refused(lost)
    assert not refused(ConnectionResetError("reset"))
