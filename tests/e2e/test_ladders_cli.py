"""``sluice ladders show|set|rm`` (audited, a file running producers re-read), ``sluice router
train --task-types`` and ``sluice spend --by task_type``, each run as an operator would."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli_support import sluice, sluice_json


def _env(tmp_path: Path) -> dict[str, str]:
    return {"SLUICE_DATABASE__URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "SLUICE_ROUTING__LADDERS_PATH": str(tmp_path / "ladders.json"),
            "SLUICE_ACTOR": "ops-alice"}


def test_set_show_and_audit_a_ladder(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert sluice(["migrate"], env).returncode == 0
    done = sluice(["ladders", "set", "coding", "--rungs",
                   "gpt-4o-mini,claude-haiku-4-5,claude-sonnet-4-6", "--target", "0.7",
                   "--reason", "brief example"], env)
    assert done.returncode == 0, done.stderr
    stored = json.loads((tmp_path / "ladders.json").read_text())
    assert [r["model"] for r in stored["coding"]["rungs"]] == [
        "gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"]
    assert stored["coding"]["target"] == 0.7
    shown = sluice_json(["ladders", "show", "coding"], env)
    assert [r["model"] for r in shown["coding"]["by_price"]] == [
        "gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"]
    assert "*" in sluice_json(["ladders", "show"], env)  # the global tiers as the default
    audit = sluice_json(["audit"], env)
    entry = next(e for e in audit if e["action"] == "ladders.set")
    assert entry["actor"] == "ops-alice" and entry["target"] == "coding"
    assert entry["detail"]["after"]["target"] == 0.7
    bad = sluice(["ladders", "set", "coding", "--rungs", "gpt-4o-mini,no-such-model"], env)
    assert bad.returncode == 2 and "no-such-model" in bad.stderr
    assert json.loads((tmp_path / "ladders.json").read_text()) == stored  # unchanged
    assert sluice(["ladders", "rm", "coding"], env).returncode == 0
    assert "coding" not in json.loads((tmp_path / "ladders.json").read_text())


def test_train_a_task_type_classifier(tmp_path: Path) -> None:
    examples = tmp_path / "examples.jsonl"
    lines = [{"prompt": f"finish the statement number {i} =", "task_type": "autocomplete"}
             for i in range(15)]
    lines += [{"prompt": f"tell me in words why loop {i} never ends", "task_type": "explain"}
              for i in range(15)]
    examples.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "tt.npz"
    meta = sluice_json(["router", "train", "--task-types", str(examples), "--out", str(out)])
    assert meta["classes"] == ["autocomplete", "explain"] and out.exists()
    assert meta["train_accuracy"] == 1.0


def test_spend_by_task_type(tmp_path: Path) -> None:
    from datetime import datetime, timezone
    from decimal import Decimal

    from models.db import ledger
    from models.db.engine import make_engine, session_factory
    from ops.db import upgrade

    env = _env(tmp_path)
    url = env["SLUICE_DATABASE__URL"]
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(timezone.utc)
    with session_factory(engine)() as s:
        for i, (task, cost) in enumerate([("autocomplete", "0.001"), ("autocomplete", "0.002"),
                                          ("multi-file-edit", "0.05")]):
            ledger.record(s, {"request_id": f"r{i}", "created_at": now, "team": "t",
                              "feature": "coding", "lane": "interactive", "tier": "cheap",
                              "provider": "anthropic", "model": "m", "backend": "api",
                              "outcome": "ok", "cost": Decimal(cost), "price_version": "v",
                              "task_type": task, "rung": 1})
        s.commit()
    engine.dispose()
    out = sluice_json(["spend", "--by", "task_type,rung"], env)
    rows = out["lines"]
    by = {(r["task_type"], str(r["rung"])): r for r in rows}
    assert Decimal(by[("autocomplete", "1")]["cost"]) == Decimal("0.003")
    assert by[("multi-file-edit", "1")]["requests"] == 1


def test_show_gives_the_target_the_quality_floor_moved_to(tmp_path: Path) -> None:
    from models.db import quality
    from models.db.engine import make_engine, session_factory

    env = {**_env(tmp_path), "SLUICE_QUALITY__FEATURES": json.dumps({"coding": {"floor": 0.6}})}
    assert sluice(["migrate"], env).returncode == 0
    assert sluice(["ladders", "set", "coding", "--rungs", "gpt-4o-mini,claude-sonnet-4-6",
                   "--target", "0.5"], env).returncode == 0
    assert "moved_targets" not in sluice_json(["ladders", "show", "coding"], env)["coding"]
    engine = make_engine(env["SLUICE_DATABASE__URL"])
    with session_factory(engine)() as s:
        quality.record_move(s, org="acme", feature="coding", before=0.5, after=1.0,
                            direction="flagship", reason="test")
        s.commit()
    engine.dispose()
    shown = sluice_json(["ladders", "show", "coding"], env)["coding"]
    # The move is acme's: another org's "coding" ladder keeps the configured target.
    assert (shown["target"], shown["moved_targets"]) == (0.5, {"acme": 1.0})
    other = sluice_json(["ladders", "show", "coding", "--org", "default"], env)["coding"]
    assert "moved_targets" not in other
