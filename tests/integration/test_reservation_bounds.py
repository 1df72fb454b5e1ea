"""Through the gateway, a real worker and the PostgreSQL ledger: what a request reserves covers
what it is billed, for Claude (which counts more than o200k, plus its tool-use system prompt)
and for GPT (issue 16, must-have 7)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db.budgets import ReservationRow, delete_budget, set_budget

pytestmark = pytest.mark.integration
TOOLS = [{"name": "find_order", "description": "Look an order up by its number.",
          "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]



@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
def test_a_short_prompt_with_tools_reserves_at_least_its_bill(gateway: Any, sessions: Any,
                                                              model: str) -> None:
    feature = f"bound-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=Decimal("1"))
        s.commit()
    gateway.admission.invalidate()
    try:
        # One output token: the output reserve cannot hide an input count that is too low.
        results = [gateway.complete({
            "team": "support", "feature": feature, "model": model, "max_tokens": 1,
            "cache": {"mode": "bypass"}, "static": {"tools": TOOLS},
            "messages": [{"role": "user", "content": text}]}, timeout=30)
            for text in ("Where is order 7?", "Wo ist Bestellung 7? Grüße", "注文7はどこ？")]
        with sessions() as s:
            rows = {r.request_id: r for r in s.scalars(select(ReservationRow).where(
                ReservationRow.request_id.in_([r.request_id for r in results])))}
        for result in results:
            row = rows[result.request_id]
            assert row.state == "settled" and row.actual == result.cost > 0
            assert row.amount >= row.actual, (model, result.usage)
    finally:
        with sessions() as s:
            delete_budget(s, "feature", feature, "total")
            s.commit()
