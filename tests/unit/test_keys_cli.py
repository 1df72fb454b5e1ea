"""``sluice keys create / list``: binding a key to features and users, operator scope."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli.keys import keys_app

runner = CliRunner()


@pytest.fixture()
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    monkeypatch.setenv("SLUICE_DATABASE__URL", url)
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    return url


def _verify(url: str, token: str) -> object:
    from models.db.api_keys import verify_key
    from models.db.engine import make_engine, session_factory

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            return verify_key(s, token)
    finally:
        engine.dispose()


def test_a_key_bound_to_features_and_users(url: str) -> None:
    out = runner.invoke(keys_app, ["create", "--team", "catalog", "--org", "acme",
                                   "--feature", "listing", "--allow-feature", "seo",
                                   "--allow-user", "ann", "--json"])
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    assert (made["feature"], made["features"], made["users"]) == ("listing", ["listing", "seo"],
                                                                 ["ann"])
    info = _verify(url, made["key"])
    assert info.may_bill_feature("seo") and not info.may_bill_feature("search")  # type: ignore
    assert info.may_bill_user("ann") and not info.may_bill_user("bob")  # type: ignore
    listed = runner.invoke(keys_app, ["list", "--org", "acme"]).output
    assert made["id"] in listed and "features listing,seo" in listed
    assert made["id"] not in runner.invoke(keys_app, ["list", "--org", "globex"]).output


def test_unbound_keys_and_operator_scope(url: str) -> None:
    free = json.loads(runner.invoke(keys_app, ["create", "--team", "t", "--json"]).output)
    assert free["features"] is None
    assert _verify(url, free["key"]).may_bill_feature("x")  # type: ignore[attr-defined]
    op = json.loads(runner.invoke(keys_app, ["create", "--team", "ops", "--operator",
                                             "--json"]).output)
    assert op["all_orgs"] is False
    wide = json.loads(runner.invoke(keys_app, ["create", "--team", "ops", "--operator",
                                               "--all-orgs", "--json"]).output)
    assert wide["all_orgs"] is True
    assert runner.invoke(keys_app, ["create", "--team", "t", "--all-orgs"]).exit_code == 2
    assert runner.invoke(keys_app, ["create", "--team", "t", "--allow-feature", "x"]
                         ).exit_code == 2


def test_keys_as_policy_create_update_rotate_show_and_every_change_audited(url: str) -> None:
    out = runner.invoke(keys_app, ["create", "--team", "catalog", "--model", "cheap", "--lane",
                                   "interactive", "--rpm", "60", "--tpm", "9000", "--expires",
                                   "30d", "--meta", "owner=ana", "--budget", "25",
                                   "--budget-soft", "20", "--json", "--actor", "ana"])
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    assert (made["models"], made["lanes"], made["rpm"], made["tpm"]) == (["cheap"],
                                                                        ["interactive"], 60, 9000)
    kid, old = made["id"], made["key"]
    assert runner.invoke(keys_app, ["update", kid, "--rpm", "120", "--clear", "lanes",
                                    "--actor", "ana"]).exit_code == 0
    rotated = runner.invoke(keys_app, ["rotate", kid, "--grace", "1h", "--json",
                                       "--actor", "ana"])
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.output)["key"]
    assert _verify(url, new) is not None and _verify(url, old) is not None  # in its grace
    shown = json.loads(runner.invoke(keys_app, ["show", kid]).output)
    assert (shown["rpm"], shown["lanes"], shown["state"]) == (120, None, "live")
    assert shown["budgets"] == [{"window": "daily", "hard": "25", "soft": "20", "spent": "0",
                                 "reserved": "0"}]
    assert runner.invoke(keys_app, ["revoke", kid, "--actor", "ana"]).exit_code == 0
    from models.db.audit import list_actions
    from models.db.engine import make_engine, session_factory

    engine = make_engine(url)
    with session_factory(engine)() as s:
        actions = [a.action for a in list_actions(s) if a.target == kid]
    engine.dispose()
    assert sorted(actions) == ["keys.create", "keys.revoke", "keys.rotate", "keys.update"]
