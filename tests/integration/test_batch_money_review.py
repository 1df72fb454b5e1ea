"""Review of issue 16: a batch that fails inside the provider and is answered directly."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models.db import ledger
from models.db.attempts import AttemptRow
from models.domain.cost import cost_of
from tests.integration.test_batch_lane import (  # noqa: F401 - fixtures
    BATCH_MAX, CAT, batch_env, batch_gateway, batch_worker, req)

pytestmark = pytest.mark.integration


def test_a_batch_answered_directly_costs_only_the_direct_call(
        batch_gateway: Any, sessions: Any, standin: Any) -> None:
    """One request of a provider batch fails there retryably (a 500 inside the batch:
    nothing billed) and is answered directly. ``batch_reply`` returns None, but the batch
    attempt RunMoney.attempt wrote as ``sent`` is never ended: finalize's charge_lost charges
    it at its full-price worst case, so the ledger row costs more than the provider billed
    and the budget is spent past the reservation (held: one worst case)."""
    standin.script_faults(["500"], model="claude-haiku-4-5", path="anthropic")
    handles = [batch_gateway.submit(req("claude-haiku-4-5")) for _ in range(BATCH_MAX)]
    results = [h.result(timeout=60) for h in handles]
    direct = [r for r in results if r.cost == cost_of(r.usage, CAT.get(r.model))]
    assert len(direct) == 1
    with sessions() as s:
        row = ledger.get(s, direct[0].request_id)
        tried = [(a.batch, a.outcome, a.billing, a.cost) for a in s.scalars(
            select(AttemptRow).where(AttemptRow.request_id == direct[0].request_id)
            .order_by(AttemptRow.id))]
    assert row is not None and row.cost == direct[0].cost, (row.cost, direct[0].cost, tried)
