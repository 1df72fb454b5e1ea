"""The brief's coding assistant through the real pipeline: a feature ladder routes
autocomplete to Claude Haiku, explanations to GPT-4o-mini and multi-file edits to Claude
Sonnet by task type (producer → Redis → the session's Celery worker → the official SDKs on the
stand-in → PostgreSQL), the ledger records task type and rung, and spend groups by them."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from ops.replay.trace import load_trace
from ops.traces.make_coding_trace import CODING_LADDER, OUT

pytestmark = pytest.mark.integration
EXPECTED = {"autocomplete": "claude-haiku-4-5", "explain": "gpt-4o-mini",
            "multi-file-edit": "claude-sonnet-4-6"}


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def coding_gateway(integration_settings: Any, celery_worker_proc: Any) -> Any:
    """A producer whose settings give feature ``coding`` the coding ladder; the worker is the
    session's own (routing happens in the producer, the route travels in the envelope)."""
    from queues.producer import connect

    routing = integration_settings.routing.model_copy(update={"ladders": {"coding":
                                                                          CODING_LADDER}})
    gw = connect(integration_settings.model_copy(update={"routing": routing}))
    yield gw
    gw.close()


def test_the_coding_trace_is_routed_by_task_type(coding_gateway: Any, sessions: Any) -> None:
    trace = load_trace(OUT)
    picked: list[dict[str, Any]] = []
    for label in EXPECTED:  # four of each kind, hinted and not
        picked += [d for d in trace if d["tags"]["label"] == label][:4]
    run = uuid.uuid4().hex[:8]
    handles = []
    for i, data in enumerate(picked):
        handles.append((data["tags"]["label"], coding_gateway.submit(
            dict(data, request_id=f"lad-{run}-{i:03d}", cache={"mode": "bypass"}))))
    for label, handle in handles:
        result = handle.result(timeout=60)
        assert result.model == EXPECTED[label], (label, result.route.reason)
        assert result.route.task_type == label
        assert result.cost > 0
    with sessions() as s:
        rows = s.execute(select(LedgerRow.task_type, LedgerRow.rung, LedgerRow.model,
                                LedgerRow.route_reason, LedgerRow.cost)
                         .where(LedgerRow.request_id.startswith(f"lad-{run}-"))).all()
        lines = {line.key[0]: line for line in ledger.spend_lines(
            s, "task_type", request_id_prefix=f"lad-{run}-")}
    assert len(rows) == len(picked)
    rungs = {"gpt-4o-mini": 0, "claude-haiku-4-5": 1, "claude-sonnet-4-6": 2}
    for task_type, rung, model, reason, _cost in rows:
        assert model == EXPECTED[task_type] and rung == rungs[model]
        assert reason.startswith("ladder coding: task ") and ("header" in reason
                                                               or "rule" in reason)
    assert Counter(r.task_type for r in rows) == Counter(
        {k: 4 for k in EXPECTED})
    assert set(lines) == set(EXPECTED)
    assert sum((line.cost for line in lines.values()), Decimal(0)) == sum(r.cost for r in rows)
    # Sonnet's edits are the dearest part of the bill, as in the brief.
    assert lines["multi-file-edit"].cost > lines["explain"].cost
