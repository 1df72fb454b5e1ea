"""``sluice replay``: a small trace through the embedded pipeline, bills checked on the ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from ops.replay.levers import BY_NAME, needs_pin, shape_request
from ops.replay.trace import TraceError, load_trace, write_trace
from ops.traces.make_trace import DEFAULT_OUT, make_requests, texts
from tests.e2e.cli_support import sluice, sluice_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: Any) -> tuple[dict[str, Any], Path]:
    """40 requests on embedded services (30 from the shipped trace, then 10 of them again,
    texts spelled out as in a recorded trace), with all levers, none, and no prompt caching."""
    home = tmp_path_factory.mktemp("replay")
    shipped = load_trace(DEFAULT_OUT)
    trace = home / "small.jsonl"
    write_trace(trace, {}, shipped[:30] + shipped[:10])
    out = sluice_json(["replay", str(trace), "--levers", "all,none,no-prompt-caching",
                       "--home", str(home)], timeout=300)
    return out, home / "replay-ledger.db"


def _ledger(db: Path, prefix: str) -> tuple[int, Decimal, Decimal]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_factory(engine)() as s:
            n, cost, base = s.execute(
                select(func.count(), func.sum(LedgerRow.cost), func.sum(LedgerRow.baseline_cost))
                .where(LedgerRow.request_id.startswith(prefix))).one()
    finally:
        engine.dispose()
    return int(n), Decimal(cost), Decimal(base)


def test_levers_cut_the_bill_and_the_figures_are_the_ledgers(
        replayed: tuple[dict[str, Any], Path]) -> None:
    out, db = replayed
    runs = {r["levers"]: r for r in out["runs"]}
    for run in runs.values():
        assert run["completed"] == run["sent"] == 40 and not run["failed"]
        n, cost, base = _ledger(db, run["request_id_prefix"])
        assert n == 40
        assert Decimal(run["bill"]["cost"]) == cost
        assert Decimal(run["bill"]["baseline_cost"]) == base
    paid_all = Decimal(runs["all"]["bill"]["cost"])
    paid_none = Decimal(runs["none"]["bill"]["cost"])
    assert paid_all < paid_none
    assert Decimal(out["all_flagship_bill"]) == paid_none
    assert Decimal(runs["all"]["reduction_vs_all_flagship"]) == 1 - paid_all / paid_none
    # No lever at all is exactly the ledger's all-flagship, no-cache baseline.
    assert paid_none == Decimal(runs["none"]["bill"]["baseline_cost"])
    assert runs["none"]["cache_hits"] == 0 and runs["all"]["cache_hits"] >= 10
    # Without prompt caching the same routes are taken, and the prompt-cache saving is gone.
    assert (Decimal(runs["no-prompt-caching"]["bill"]["prompt_caching"])
            < Decimal(runs["all"]["bill"]["prompt_caching"]) / 10)
    tiers = {r: sorted((t["tier"], t["requests"]) for t in runs[r]["by_tier"])
             for r in ("all", "no-prompt-caching")}
    assert tiers["all"] == tiers["no-prompt-caching"]


def test_the_table_output(tmp_path: Path) -> None:
    done = sluice(["replay", "--limit", "6", "--levers", "all,none", "--home", str(tmp_path)],
                  timeout=300)
    assert done.returncode == 0, done.stderr
    assert "lever worth" in done.stdout and "no levers" in done.stdout


def test_a_bad_trace_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"team": "t", "feature": "f", "messages": []}\n')
    done = sluice(["replay", str(bad), "--home", str(tmp_path)])
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr
    bad.write_text('{"team": "t", "feature": "f", "static": {"system": {"$ref": "nope"}}, '
                   '"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(TraceError, match="not defined"):
        load_trace(bad)


def test_the_shipped_trace_is_what_the_script_makes(tmp_path: Path) -> None:
    shipped = load_trace(DEFAULT_OUT)
    regenerated = tmp_path / "t.jsonl"
    from ops.traces.make_trace import main

    main(["--out", str(regenerated)])
    assert load_trace(regenerated) == shipped
    long = sum(1 for r in shipped if r["feature"] == "seo-article")
    assert 0.15 <= long / len(shipped) <= 0.25  # about 20 % long articles
    assert len({r["team"] for r in shipped}) >= 3 and len({r["feature"] for r in shipped}) >= 4
    distinct = {json.dumps(r["messages"]) + r["feature"] for r in shipped}
    assert len(distinct) < len(shipped) * 0.8  # repeats, for the response cache
    assert set(texts()) >= {"style-guide"} and len(make_requests(10, 1)) == 10


def test_request_shaping_per_lever() -> None:
    data = {"team": "t", "feature": "f", "model": "auto", "user": "u1",
            "static": {"system": "STATIC", "few_shot": [{"role": "user", "content": "ex"}]},
            "messages": [{"role": "user", "content": "ask"}]}
    flag = shape_request(data, BY_NAME["no-routing"], salt="s", index=0)
    assert flag["model"] == "flagship" and flag["static"]["system"] == "[s]\nSTATIC"
    folded = shape_request(data, BY_NAME["no-prompt-caching"], salt="s", index=0, tier="cheap")
    assert "static" not in folded and folded["model"] == "cheap"
    assert "STATIC" in folded["messages"][0]["content"]
    assert folded["messages"][0]["content"].endswith("ask")
    other_user = shape_request(dict(data, user="u2"), BY_NAME["no-prompt-caching"], salt="s",
                               index=1, tier="cheap")
    assert other_user["messages"] == folded["messages"]  # repeats stay cacheable
    none_a = shape_request(data, BY_NAME["none"], salt="s", index=0)
    none_b = shape_request(data, BY_NAME["none"], salt="s", index=1)
    assert none_a["messages"] != none_b["messages"]  # no provider cache can reuse anything
    assert needs_pin(data, BY_NAME["no-prompt-caching"]) and not needs_pin(data, BY_NAME["all"])
