"""``sluice advise`` on a small ledger: each lever's estimate from the rows, ranked by USD/month."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import models.db.budgets  # noqa: F401  (its tables)
import models.db.stored_text  # noqa: F401
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


def _texts(s: object, rows: list[LedgerRow], prompts: list[str]) -> None:
    from models.db.stored_text import StoredTextRow

    s.add_all(rows)  # type: ignore[attr-defined]
    s.add_all([StoredTextRow(request_id=r.request_id, created_at=r.created_at,  # type: ignore
                             expires_at=NOW + timedelta(days=30), team=r.team,
                             feature=r.feature, prompt=p, answer="...")
               for r, p in zip(rows, prompts)])


def test_near_repeats_name_the_normalization_rule_that_would_catch_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    prompts = ["system: be brief\nuser: Where is order 12345-A? I asked on 2026-11-30.",
               "system: be brief\nuser: Where is order 99821-B? I asked on 2026-12-01.",
               "system: be brief\nuser: Where is order 99821-B? I asked on 2026-12-01.",
               "system: be brief\nuser: Where is order 77001-C? I asked on 2026-12-01.",
               "system: be brief\nuser: Cancel order 12345-A please."]
    # Only the order number differs here: the date both share is no reason to strip dates.
    same_day = [f"user: Refund order {n}-Q from 2026-12-01 now." for n in (4411, 4412)]
    with session_factory(engine)() as s:
        _texts(s, [_row(i, feature="support") for i in range(len(prompts))], prompts)
        _texts(s, [_row(50 + i, feature="refunds") for i in range(2)], same_day)
        s.commit()
        everything = advise(s, CAT, since=NOW - timedelta(days=30), now=NOW)
    engine.dispose()
    by = {a.lever: a for a in everything if a.feature == "support"}
    refunds = [a for a in everything if a.feature == "refunds" and a.lever == "normalize"]
    assert len(refunds) == 1 and '"patterns": ["order_id"]}' in refunds[0].action
    one = cost_of(Usage(input_uncached=2000, output=300), CAT.get("gpt-4o-mini"))
    # Rows 1 and 3 differ from row 0 only by the order number and the date; row 2 is an exact
    # repeat (the response-cache line's), row 4 another question.
    assert by["normalize"].window_saving == 2 * one
    assert '"patterns": ["order_id", "date"]' in by["normalize"].action
    assert "2 prompts" in by["normalize"].action


def test_a_static_prefix_below_the_minimum_is_priced_padded(tmp_path: Path) -> None:
    from models.domain.tokens import count_text

    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    system = " ".join(f"Rule {i}: answer in plain words." for i in range(70))
    prefix = count_text(system)
    assert 300 < prefix < 1024
    prompts = [f"system: {system}\nuser: describe item {i}" for i in range(6)]
    with session_factory(engine)() as s:
        _texts(s, [_row(i, feature="desc", model="gpt-4.1") for i in range(6)], prompts)
        s.commit()
        lines = [a for a in advise(s, CAT, since=NOW - timedelta(days=30), now=NOW)
                 if a.lever == "pad-prefix"]
    engine.dispose()
    spec = CAT.get("gpt-4.1")
    paid = 6 * cost_of(Usage(input_uncached=2000, output=300), spec)
    # Padded to 1,088 tokens: the first request writes it, the next five read 1,024 of them.
    first = cost_of(Usage(input_uncached=2000 - prefix + 1088, output=300), spec)
    later = cost_of(Usage(input_uncached=2000 - prefix + 64, cache_read=1024, output=300), spec)
    assert len(lines) == 1 and lines[0].feature == "desc"
    assert lines[0].window_saving == paid - first - 5 * later
    assert f"~{prefix} to ~1088 tokens" in lines[0].action


def test_lines_no_replay_can_apply_are_exact(tmp_path: Path) -> None:
    """A price change and a budget's exhaustion date cannot be replayed: both are checked
    against their arithmetic here, to the cent and the minute."""
    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    with session_factory(engine)() as s:
        s.add_all([_row(20 + i, model="gpt-4o") for i in range(40)])
        # Window from 2026-12-01 00:00; 40 x $0.008 spent by 2026-12-02 12:00 (36 h).
        set_budget(s, "team", "t", "monthly", hard=Decimal("0.5"), now=NOW - timedelta(days=1))
        s.commit()
        lines = advise(s, CAT, since=NOW - timedelta(days=30), now=NOW)
        warnings = budget_warnings(s, now=NOW)
    engine.dispose()
    usage = Usage(input_uncached=2000, output=300)
    price = {a.lever: a for a in lines}["model-price"]
    assert price.model == "gpt-4.1"
    assert price.window_saving == 40 * (cost_of(usage, CAT.get("gpt-4o"))
                                        - cost_of(usage, CAT.get("gpt-4.1")))
    assert price.monthly == (price.window_saving * 30 / 30).quantize(Decimal("0.01"))
    # $0.32 in 36 h leaves $0.18: 20.25 h more at that rate.
    assert warnings == ["budget team:t:monthly: at this window's rate ($0.0089/h) it is "
                        "exhausted on 2026-12-03 08:15 UTC, before it resets 2027-01-01"]
