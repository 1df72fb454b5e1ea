"""``sluice budget`` and ``sluice queues`` on the embedded defaults (SQLite, in-memory broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli.budget import budget_app
from ops.cli.queues import queues_app

runner = CliRunner()


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    monkeypatch.setenv("SLUICE_DATABASE__URL", url)
    monkeypatch.setenv("SLUICE_BROKER__URL", "memory://")
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    return url


def test_budget_set_list_show() -> None:
    out = runner.invoke(budget_app, ["set", "team", "search", "--hard", "$1,000",
                                     "--soft", "80%", "--window", "monthly"])
    assert out.exit_code == 0, out.output
    assert "team:search:monthly" in out.output and "$800.00" in out.output
    listed = json.loads(runner.invoke(budget_app, ["list", "--json"]).output)
    assert [(b["budget"], b["hard_limit"], b["soft_limit"], b["state"]) for b in listed] == [
        ("team:search:monthly", "1000", "800", "ok")]
    shown = runner.invoke(budget_app, ["show", "team", "search", "--window", "monthly",
                                       "--json"])
    data = json.loads(shown.output)
    assert data["open_reservations"] == 0 and data["resets_at"] and data["alerts"] == []


def test_budgets_of_two_orgs_with_one_name_are_two_budgets() -> None:
    for org, hard in (("acme", "5"), ("globex", "7")):
        out = runner.invoke(budget_app, ["set", "team", "catalog", "--hard", hard,
                                         "--org", org])
        assert out.exit_code == 0 and f"{org}/team:catalog:daily" in out.output, out.output
    listed = json.loads(runner.invoke(budget_app, ["list", "--json", "--org", "acme"]).output)
    assert [(b["budget"], b["org"], b["hard_limit"]) for b in listed] == [
        ("acme/team:catalog:daily", "acme", "5")]
    shown = json.loads(runner.invoke(budget_app, ["show", "team", "catalog", "--org", "globex",
                                                  "--json"]).output)
    assert shown["hard_limit"] == "7"
    assert runner.invoke(budget_app, ["show", "team", "catalog"]).exit_code == 1  # default org
    assert runner.invoke(budget_app, ["rm", "team", "catalog", "--org", "acme"]).exit_code == 0
    left = json.loads(runner.invoke(budget_app, ["list", "--json"]).output)
    assert [b["budget"] for b in left] == ["globex/team:catalog:daily"]
    # A team budget cannot span orgs; a lane budget without --org does (and pauses).
    wide = runner.invoke(budget_app, ["set", "team", "catalog", "--hard", "1", "--org", "*"])
    assert wide.exit_code == 2 and "belongs to one org" in wide.output
    lane = json.loads(runner.invoke(budget_app, ["set", "lane", "async", "--hard", "1",
                                                 "--json"]).output)
    assert (lane["budget"], lane["org"]) == ("lane:async:daily", "*")


def test_budget_errors_say_what_to_do() -> None:
    bad = runner.invoke(budget_app, ["set", "squad", "x", "--hard", "5"])
    assert bad.exit_code == 2 and "use one of org, lane, team, feature, user" in bad.output
    over = runner.invoke(budget_app, ["set", "team", "x", "--hard", "5", "--soft", "6"])
    assert over.exit_code == 2 and "above the hard limit" in over.output
    missing = runner.invoke(budget_app, ["show", "team", "nobody"])
    assert missing.exit_code == 1 and "sluice budget set" in missing.output


def test_queues_pause_status_resume() -> None:
    out = runner.invoke(queues_app, ["pause", "async", "--reason", "provider incident"])
    assert out.exit_code == 0, out.output
    status = json.loads(runner.invoke(queues_app, ["status", "--json", "--timeout",
                                                   "0.1"]).output)
    paused = {r["queue"]: r["reasons"] for r in status if r["paused"]}
    assert paused == {"async.api": ["operator: provider incident"],
                      "async.gpu": ["operator: provider incident"]}
    assert runner.invoke(queues_app, ["resume", "all"]).exit_code == 0
    status = json.loads(runner.invoke(queues_app, ["status", "--json", "--timeout",
                                                   "0.1"]).output)
    assert not any(r["paused"] for r in status)
    wrong = runner.invoke(queues_app, ["pause", "nope", "--reason", "x"])
    assert wrong.exit_code == 2 and "unknown queue" in wrong.output
