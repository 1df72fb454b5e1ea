"""``sluice ladders replay``: the coding trace billed three ways through the real pipeline."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.e2e.cli_support import sluice_json

KINDS = {"autocomplete": "claude-haiku-4-5", "explain": "gpt-4o-mini",
         "multi-file-edit": "claude-sonnet-4-6"}


def test_the_ladder_replay_bills_three_plans_and_the_ladder_saves(tmp_path: Path) -> None:
    # The replay keeps its ledger under the working directory: a temporary one of its own.
    out = sluice_json(["ladders", "replay", "--limit", "24", "--concurrency", "4"],
                      timeout=400, cwd=tmp_path)
    assert out["requests"] == 24
    plans = {p["plan"]: p for p in out["plans"]}
    assert list(plans) == ["ladder", "all-flagship", "pair"]
    for p in plans.values():
        assert p["completed"] == 24 and not p["failed"], p
        lines = p["by_task_type"]
        assert set(lines) == set(KINDS)
        assert sum(v["requests"] for v in lines.values()) == 24
        assert abs(sum(v["share"] for v in lines.values()) - 1.0) < 1e-3
        # Each plan's total is the sum of its task types' costs, read from the ledger.
        assert sum((Decimal(v["cost"]) for v in lines.values()), Decimal(0)) == \
            Decimal(p["cost"])
    ladder, sonnet = plans["ladder"], plans["all-flagship"]
    # The ladder sent each task type to its own rung; all-Sonnet sent everything to Sonnet.
    for kind, model in KINDS.items():
        assert ladder["by_task_type"][kind]["models"] == {
            model: ladder["by_task_type"][kind]["requests"]}
        assert ladder["by_task_type"][kind]["routed_task_types"] == {
            kind: ladder["by_task_type"][kind]["requests"]}
        assert set(sonnet["by_task_type"][kind]["models"]) == {"claude-sonnet-4-6"}
    assert ladder["ladder_saves"] is None
    assert float(sonnet["ladder_saves"]) > 0 and float(plans["pair"]["ladder_saves"]) > 0
    assert Decimal(ladder["cost"]) < Decimal(sonnet["cost"])
    # The brief's point: the autocomplete lines cost far less on Haiku than on Sonnet.
    assert Decimal(ladder["by_task_type"]["autocomplete"]["cost"]) < \
        Decimal(sonnet["by_task_type"]["autocomplete"]["cost"])
