"""The README's two commands: they open the README, CI calls the test one, the demo one works."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_opens_with_the_two_commands() -> None:
    assert readme_commands() == ["bash ops/demo.sh", "bash ops/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash ops/test.sh" in ci.splitlines()[-1]


def test_demo_command_runs_on_embedded_defaults(tmp_path: Path) -> None:
    # No services, no keys: strip every SLUICE_ / provider variable the test session may carry.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLUICE_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    proc = subprocess.run(["bash", "ops/demo.sh", "-n", "40", "--json", "--home",
                           str(tmp_path / "home")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["sent"] == 40 and out["completed"] == 40 and not out["failed"]
    assert "stand-in" in out["providers"]["openai"]
    teams = {line["team"] for line in out["by_team"]}
    assert {"catalog", "marketing"} <= teams
    total = sum(float(line["cost"]) for line in out["by_team"])
    baseline = sum(float(line["baseline_cost"]) for line in out["by_team"])
    assert 0 < total < baseline  # the levers saved money against all-flagship, no cache
    assert (tmp_path / "home" / "demo-ledger.db").exists()
