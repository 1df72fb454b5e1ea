"""Behaviour-changing CLI commands leave who/when/what/why in the audit table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ops.db import upgrade


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    for name in [n for n in __import__("os").environ if n.startswith("SLUICE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLUICE_DATABASE__URL", url)
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    from ops.cli import main

    main._mount_subcommands()
    runner = CliRunner()

    def run(*args: str) -> Any:
        out = runner.invoke(main.app, list(args))
        assert out.exit_code == 0, (args, out.output, out.exception)
        return out

    return run


def _entries(cli: Any, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(cli("audit", "--json", *args).output))


def test_each_behaviour_change_is_recorded(cli: Any) -> None:
    cli("queues", "pause", "interactive", "--reason", "provider outage", "--actor", "alice")
    cli("queues", "resume", "interactive", "--reason", "outage over", "--actor", "alice")
    cli("budget", "set", "team", "catalog", "--hard", "12.50", "--reason", "Q4 plan",
        "--actor", "bob")
    key_out = cli("keys", "create", "--team", "catalog", "--json", "--reason", "new service",
                  "--actor", "carol")
    key = json.loads(key_out.output)
    cli("keys", "revoke", key["id"], "--reason", "rotated", "--actor", "carol")
    cli("budget", "rm", "team", "catalog", "--actor", "bob")
    entries = _entries(cli)
    got = [(e["actor"], e["action"], e["target"], e["reason"]) for e in entries]
    assert got == [
        ("alice", "queues.pause", "interactive.api,interactive.gpu", "provider outage"),
        ("alice", "queues.resume", "interactive.api,interactive.gpu", "outage over"),
        ("bob", "budget.set", "team:catalog:daily", "Q4 plan"),
        ("carol", "keys.create", key["id"], "new service"),
        ("carol", "keys.revoke", key["id"], "rotated"),
        ("bob", "budget.rm", "team:catalog:daily", ""),
    ]
    assert Decimal(entries[2]["detail"]["hard"]) == Decimal("12.50")
    # The key's secret is shown once to its creator and recorded nowhere.
    assert key["key"] not in json.dumps(entries)
    assert key["key"].rsplit("-", 1)[1] not in cli("audit").output
    for e in entries:
        at = datetime.fromisoformat(e["at"])
        assert abs((datetime.now(timezone.utc) - at).total_seconds()) < 60


def test_actor_defaults_to_the_os_user_or_sluice_actor(cli: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    cli("queues", "pause", "async.api", "--reason", "drain")
    monkeypatch.setenv("SLUICE_ACTOR", "deploy-bot")
    cli("queues", "resume", "async.api")
    actors = [e["actor"] for e in _entries(cli)]
    assert actors == [getpass.getuser(), "deploy-bot"]


def test_since_and_action_filter(cli: Any) -> None:
    from models.db.audit import record_action
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings

    engine = make_engine(load_settings().database.url)
    with session_factory(engine)() as s:
        record_action(s, actor="old", action="cache.flush", target="team=x",
                      now=datetime.now(timezone.utc) - timedelta(days=3))
        s.commit()
    engine.dispose()
    cli("queues", "pause", "all", "--reason", "freeze", "--actor", "ops")
    assert [e["actor"] for e in _entries(cli)] == ["old", "ops"]
    assert [e["actor"] for e in _entries(cli, "--since", "24h")] == ["ops"]
    assert [e["actor"] for e in _entries(cli, "--action", "cache.flush")] == ["old"]
    table = cli("audit", "--since", "7d").output
    assert "freeze" in table and "queues.pause" in table


@pytest.mark.integration
def test_cache_flush_is_recorded(cli: Any, redis_db_url: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_CACHE__REDIS_URL", redis_db_url)
    monkeypatch.setenv("SLUICE_CACHE__KEY_PREFIX", "sgaudit:rc:")
    cli("cache", "flush", "--team", "catalog", "--reason", "bad answers", "--actor", "dana")
    (entry,) = _entries(cli, "--action", "cache.flush")
    assert (entry["actor"], entry["target"], entry["reason"]) == ("dana", "team=catalog",
                                                                  "bad answers")
    assert entry["detail"]["removed"] == 0
