"""The quality guard on a ladder feature, on real workers: a cheap rung's answer is shadowed
by the rung above (not the global flagship), judged per task type and rung, and a floor breach
moves that ladder's target, which the producer's ladder route then reads; a ladder whose rungs
agree stays put."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import audit
from models.db import quality as repo
from models.db.tables import JudgementRow, LedgerRow
from tests.quality_support import WORKER_LOG, ask, judged, wait_for
from tests.services import run_token

pytestmark = pytest.mark.integration
TOKEN = run_token()
WRONG = f"lad-wrong-{TOKEN}"  # the first rung (gpt-4o-mini) answers this feature wrongly
RIGHT = f"lad-right-{TOKEN}"  # every rung answers alike
RUNGS = ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"]
BUDGET = Decimal("0.05")


def _ladder() -> dict[str, Any]:
    # Target 0: every rung meets it, so auto takes the cheapest (rung 0) until the floor moves.
    return {"rungs": RUNGS, "target": 0.0, "task_types": [
        {"name": "classify", "when": {"prompt_regex": "(?i)^classify"}}]}


@pytest.fixture(scope="module")
def ladder_quality_env(integration_env: dict[str, str]) -> dict[str, str]:
    guard = {"shadow_cheap": 1.0, "shadow_flagship": 1.0, "judge": "exact", "floor": 0.6,
             "release": 0.95, "min_pairs": 8, "step": 1.0, "shadow_budget_usd": str(BUDGET)}
    return {**integration_env, "SLUICE_BROKER__KEY_PREFIX": f"sglq{TOKEN}:",
            "SLUICE_QUALITY__FEATURES": json.dumps({WRONG: guard, RIGHT: guard}),
            "SLUICE_ROUTING__LADDERS": json.dumps({WRONG: _ladder(), RIGHT: _ladder()})}


@pytest.fixture(scope="module")
def ladder_gateway(ladder_quality_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    from tests.worker_proc import worker_gateway

    log = tmp_path_factory.mktemp("ladder-quality") / "worker.log"
    WORKER_LOG.append(log)
    with worker_gateway(ladder_quality_env, log, name=f"ladq-{TOKEN}") as gw:
        yield gw


def test_a_wrong_cheap_rung_moves_its_ladder_target_and_the_agreeing_ladder_stays(
        ladder_gateway: Any, sessions: Any) -> None:
    gw = ladder_gateway
    for i in range(10):
        served = ask(gw, WRONG, f"Classify the sentiment of review {i}: "
                                "[[answer: positive; gpt-4o-mini: negative]]")
        # Rung 0 until the floor moves the ladder (which may land inside the loop).
        assert (served.route.rung, served.text) in {(0, "negative"), (2, "positive")}
        assert i > 0 or served.route.rung == 0
        assert served.route.task_type == "classify"
        same = ask(gw, RIGHT, f"Classify the aisle of item {i}: [[answer: kitchen]]")
        assert (same.model, same.route.rung, same.text) == ("gpt-4o-mini", 0, "kitchen")
    wait_for(lambda: judged(sessions, WRONG) >= 8 and judged(sessions, RIGHT) >= 8)
    with sessions() as s:
        move = wait_for(lambda: repo.last_move(s, "default", WRONG))
        assert repo.last_move(s, "default", RIGHT) is None
        entries = [e for e in audit.list_actions(s, action="routing.move")
                   if e.target == f"default/{WRONG}"]
        pairs = s.execute(select(JudgementRow.served_rung, JudgementRow.shadow_rung,
                                 JudgementRow.shadow_model, JudgementRow.task_type,
                                 JudgementRow.agree)
                          .where(JudgementRow.feature == WRONG)).all()
        shadows = s.execute(select(LedgerRow.lane, LedgerRow.model).where(
            LedgerRow.feature.in_([WRONG, RIGHT]), LedgerRow.purpose == "shadow")).all()
        spent = s.scalar(select(func.coalesce(func.sum(LedgerRow.cost), 0)).where(
            LedgerRow.feature == WRONG, LedgerRow.purpose == "shadow"))
    # The ladder's target moved (0 -> 1: the strongest rung), recorded and audited as such.
    assert (move.direction, move.before, move.after) == ("flagship", 0.0, 1.0)
    assert move.reason.startswith("ladder target")
    assert entries and entries[0].detail["ladder"] is True and entries[0].detail["after"] == 1.0
    # Rung 0's answers were shadowed by rung 1 (Haiku), never by the global flagship (gpt-4o);
    # after the move rung 2's answers are shadowed one rung down, by Haiku too.
    up = [p for p in pairs if p.served_rung == 0]
    assert len(up) >= 8 and all((p.shadow_rung, p.shadow_model, p.task_type, p.agree)
                                == (1, "claude-haiku-4-5", "classify", False) for p in up)
    assert all((p.served_rung, p.shadow_rung) == (2, 1) for p in pairs if p.served_rung != 0)
    assert {(lane, model) for lane, model in shadows} == {("async", "claude-haiku-4-5")}
    assert 0 < Decimal(spent) <= BUDGET
    # The producer's ladder route reads the move (its move book re-reads every 2 s).
    moved = wait_for(lambda: (lambda r: r if r.route.rung == 2 else None)(
        ask(gw, WRONG, "Classify the sentiment of review 99: [[answer: positive]]")), 30)
    assert (moved.model, moved.text) == ("claude-sonnet-4-6", "positive")
    assert "target 1.000: the strongest" in moved.route.reason
    assert ask(gw, RIGHT, "Classify the aisle of item 99: [[answer: kitchen]]").route.rung == 0


def test_the_quality_table_shows_the_rung_and_a_revert_puts_the_ladder_back(
        ladder_gateway: Any, sessions: Any, pg_url: str,
        ladder_quality_env: dict[str, str], monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from ops.cli.quality import quality_app as app

    for name, value in ladder_quality_env.items():
        monkeypatch.setenv(name, value)
    wait_for(lambda: judged(sessions, WRONG) >= 8)
    out = CliRunner().invoke(app, ["--json", "--url", pg_url])
    assert out.exit_code == 0, out.output
    rows = {(r["feature"], r["task_type"], r["rung"]): r for r in json.loads(out.stdout)}
    wrong, right = rows[(WRONG, "classify", 0)], rows[(RIGHT, "classify", 0)]
    assert wrong["agreement"] < 0.5 and wrong["low"] < 0.6 == wrong["floor"]
    assert right["low"] >= 0.6 and right["agree"] == right["judged"]
    # Rung 0 saved what Haiku would have cost over it; the disagreeing pairs' part too.
    assert Decimal(wrong["saved"]) > 0 and Decimal(wrong["saved_on_disagreement"]) > 0
    table = CliRunner().invoke(app, ["--url", pg_url])
    assert table.exit_code == 0 and "classify" in table.output
    reverted = CliRunner().invoke(app, ["revert", WRONG, "--reason", "test", "--url", pg_url])
    assert reverted.exit_code == 0, reverted.output
    back = wait_for(lambda: (lambda r: r if r.route.rung == 0 else None)(
        ask(ladder_gateway, WRONG, "Classify review 100: [[answer: positive]]")), 30)
    assert back.model == "gpt-4o-mini"
