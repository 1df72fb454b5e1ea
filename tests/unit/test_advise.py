"""``sluice advise`` on a small ledger: each lever's estimate from the rows, ranked by USD/month."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import models.db.budgets  # noqa: F401  (its tables)
from models.db.budgets import set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import Base, JudgementRow, LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.usage import Usage
from ops.advise import advise, budget_warnings

CAT = load_catalogue()
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def _row(i: int, **kw: object) -> LedgerRow:
    model = str(kw.pop("model", "gpt-4o-mini"))
    usage = Usage(input_uncached=2000, output=300)
    cost = cost_of(usage, CAT.get(model))
    values = dict(request_id=f"r{i}", created_at=NOW - timedelta(days=1), team="t",
                  feature="shop", lane="interactive", tier=CAT.get(model).tier,
                  provider=CAT.get(model).provider, model=model, backend="api", outcome="ok",
                  input_uncached=2000, output=300, cost=cost, baseline_cost=cost,
                  list_cost=cost, price_version=CAT.version)
    values.update(kw)
    return LedgerRow(**values)


def test_each_lever_is_estimated_from_the_ledger_and_ranked(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    with session_factory(engine)() as s:
        s.add_all([_row(i, lane="async") for i in range(4)])
        s.add_all([_row(10 + i, volatile_prefix=True) for i in range(2)])
        s.add_all([_row(60 + i, prompt_hash="h" * 64) for i in range(3)])
        s.add_all([_row(20 + i, model="gpt-4o") for i in range(40)])
        s.add_all([JudgementRow(request_id=f"r{20 + i}", created_at=NOW - timedelta(days=1),
                                team="t", feature="shop", served_tier="flagship",
                                served_model="gpt-4o", shadow_model="gpt-4o-mini",
                                judge="exact", agree=True, served_cost=Decimal("0.008"),
                                shadow_cost=Decimal("0.0005")) for i in range(40)])
        set_budget(s, "team", "t", "monthly", hard=Decimal("0.5"), now=NOW - timedelta(days=1))
        s.commit()
        lines = advise(s, CAT, since=NOW - timedelta(days=30), now=NOW)
        warnings = budget_warnings(s, now=NOW)
    engine.dispose()
    by = {a.lever: a for a in lines}
    assert {"batch-api", "stable-prefix", "flagship-share", "response-cache"} <= set(by)
    one = cost_of(Usage(input_uncached=2000, output=300), CAT.get("gpt-4o-mini"))
    assert by["batch-api"].window_saving == 4 * one / 2  # the batch discount, exactly
    assert by["response-cache"].window_saving == 2 * one  # the two repeats, not the first
    assert by["batch-api"].monthly == (4 * one / 2).quantize(Decimal("0.01"))
    assert by["flagship-share"].window_saving > 0 and "40/40" in by["flagship-share"].action
    assert [a.monthly for a in lines] == sorted((a.monthly for a in lines), reverse=True)
    assert all(a.assumption for a in lines)
    assert warnings and "exhausted on 2026-12-0" in warnings[0]
