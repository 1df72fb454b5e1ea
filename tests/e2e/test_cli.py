"""The ``sluice`` CLI run for real against a PostgreSQL ledger filled by real requests."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ops.bench.harness import free_port
from ops.cli.spend import UsageError, parse_groups, parse_when
from tests.e2e.cli_support import ROOT, fill_ledger, sluice, sluice_json, sql_totals
from tests.services import run_token

TEAM = f"cli{run_token()}".replace("_", "")


@pytest.fixture(scope="module")
def filled(gateway: Any, integration_env: dict[str, str], pg_url: str) -> dict[str, str]:
    """The integration environment, after real requests of team ``TEAM`` went through."""
    assert fill_ledger(gateway, TEAM) == 11
    return integration_env


# --- pure parsing (no services) -------------------------------------------------------------

def test_since_reads_spans_dates_and_refuses_nonsense() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("90m", now=now) == now - timedelta(minutes=90)
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_when("today", now=now) == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert parse_when(None) is None
    with pytest.raises(UsageError, match="7d, 24h"):
        parse_when("last tuesday")


def test_groups_resolve_route_and_name_the_bad_one() -> None:
    assert parse_groups("route,feature,day") == ["tier", "feature", "day"]
    with pytest.raises(UsageError, match="cannot group spend by colour"):
        parse_groups("team,colour")


# --- sluice spend ---------------------------------------------------------------------------

@pytest.mark.integration
def test_spend_totals_match_a_direct_sql_sum(filled: dict[str, str], pg_url: str) -> None:
    out = sluice_json(["spend", "--by", "team,feature", "--team", TEAM], filled)
    (n, cost, base, hits), = sql_totals(pg_url, TEAM).values()
    total = out["total"]
    assert (total["requests"], Decimal(total["cost"]), Decimal(total["baseline_cost"])) == (
        n, cost, base)
    assert total["cache_hits"] == hits and hits >= 3  # the repeats were answered from cache
    per_feature = sql_totals(pg_url, TEAM, group="feature")
    assert {line["feature"]: (line["requests"], Decimal(line["cost"]))
            for line in out["lines"]} == {f: (v[0], v[1]) for f, v in per_feature.items()}
    levers = sum(Decimal(total[k]) for k in ("saved_by_response_cache", "saved_by_routing",
                                             "saved_by_prompt_caching"))
    assert levers + Decimal(total["cost"]) == Decimal(total["baseline_cost"])
    assert Decimal(total["saved_by_routing"]) > 0 and Decimal(total["saved_by_response_cache"]) > 0


@pytest.mark.integration
@pytest.mark.parametrize("by", ["feature", "user", "model", "lane", "route", "day", "hour",
                                "outcome", "deployment"])
def test_every_grouping_adds_up_to_the_total(filled: dict[str, str], pg_url: str,
                                             by: str) -> None:
    out = sluice_json(["spend", "--by", by, "--team", TEAM, "--since", "1d"], filled)
    (n, cost, _base, _hits), = sql_totals(pg_url, TEAM).values()
    assert sum(line["requests"] for line in out["lines"]) == n
    assert sum(Decimal(line["cost"]) for line in out["lines"]) == cost
    assert len(out["lines"]) >= (2 if by in ("feature", "user", "model", "lane", "route",
                                            "outcome") else 1)


@pytest.mark.integration
def test_whole_ledger_and_windows(filled: dict[str, str], pg_url: str) -> None:
    everyone = sluice_json(["spend", "--by", "team"], filled)
    (n, cost, _b, _h), = sql_totals(pg_url).values()
    assert (everyone["total"]["requests"], Decimal(everyone["total"]["cost"])) == (n, cost)
    future = sluice_json(["spend", "--since", "2999-01-01", "--team", TEAM], filled)
    assert future["total"]["requests"] == 0 and future["lines"] == []
    table = sluice(["spend", "--by", "feature", "--team", TEAM], filled)
    assert table.returncode == 0 and "Savings by lever" in table.stdout
    assert f"${sql_totals(pg_url, TEAM)[None][1]:,.6f}" in table.stdout


# --- exit codes and help ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    (["spend", "--by", "colour"], "use any of"),
    (["spend", "--since", "yesterdayish"], "7d, 24h"),
    (["spend", "--no-such-flag"], "No such option"),
    (["ledger", "export", "--format", "xml"], "xml"),
    (["report", "--out", "report.pdf"], ".html"),
    (["replay", "--levers", "everything"], "no-routing"),
    (["metrics", "serve", "--host", "0.0.0.0"], "--basic-auth"),
    (["flower", "--host", "0.0.0.0"], "--basic-auth"),
])
def test_bad_usage_exits_2_with_a_helpful_message(args: list[str], needle: str) -> None:
    done = sluice(args, {"SLUICE_DATABASE__URL": "sqlite:///nonexistent/never.db"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr


def test_an_unreachable_ledger_exits_1_and_says_where() -> None:
    done = sluice(["spend", "--db", "postgresql://postgres@127.0.0.1:9/none"])
    assert done.returncode == 1
    assert "cannot read the ledger at 127.0.0.1:9/none" in done.stderr


@pytest.mark.parametrize("command", [["spend"], ["ledger", "export"], ["report"], ["replay"],
                                     ["metrics", "serve"], ["metrics", "dump"], ["flower"]])
def test_every_command_has_help(command: list[str]) -> None:
    done = sluice([*command, "--help"])
    assert done.returncode == 0 and "Usage" in done.stdout, done.stderr


# --- sluice ledger export ---------------------------------------------------------------------

@pytest.mark.integration
def test_export_csv_and_json_hold_every_row_exactly(filled: dict[str, str], pg_url: str,
                                                    tmp_path: Any) -> None:
    (n, cost, base, _hits), = sql_totals(pg_url, TEAM).values()
    done = sluice(["ledger", "export", "--format", "csv", "--team", TEAM], filled)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == n and {r["team"] for r in rows} == {TEAM}
    assert sum(Decimal(r["cost"]) for r in rows) == cost
    out = tmp_path / "ledger.json"
    done = sluice(["ledger", "export", "-f", "json", "--team", TEAM, "--since", "1d",
                   "--out", str(out)], filled)
    assert done.returncode == 0 and f"wrote {n} ledger rows" in done.stderr
    data = json.loads(out.read_text())
    assert sum(Decimal(r["baseline_cost"]) for r in data) == base
    assert all(isinstance(r["cost"], str) for r in data)  # money never as a float
    lines = sluice(["ledger", "export", "-f", "jsonl", "--team", TEAM], filled).stdout
    assert len(lines.splitlines()) == n


# --- sluice metrics -------------------------------------------------------------------------

def _samples(text: str, name: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name]


@pytest.mark.integration
def test_metrics_dump_matches_the_ledger(filled: dict[str, str], pg_url: str) -> None:
    done = sluice(["metrics", "dump"], filled)
    assert done.returncode == 0, done.stderr
    (n, cost, _b, hits), = sql_totals(pg_url, TEAM).values()
    mine = [s for s in _samples(done.stdout, "sluice_cost_usd_total")
            if s.labels["team"] == TEAM]
    assert sum(s.value for s in mine) == pytest.approx(float(cost), rel=1e-9)
    assert sum(s.value for s in _samples(done.stdout, "sluice_cache_hits_total")
               if s.labels["team"] == TEAM) == hits
    depth = {s.labels["queue"] for s in _samples(done.stdout, "sluice_queue_depth")}
    assert {"interactive.api", "async.api"} <= depth  # the session worker declared them
    up = {s.labels["source"]: s.value for s in _samples(done.stdout, "sluice_metrics_source_up")}
    # shed_tally: the front doors' refusal counts in Redis (none here, but readable).
    assert up == {"ledger": 1.0, "budgets": 1.0, "broker": 1.0, "shed_tally": 1.0,
                  "quality": 1.0}



@pytest.fixture
def serving(filled: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    env = {**filled, "PYTHONPATH": str(ROOT), "SLUICE_METRICS_TOKEN": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli.main", "metrics", "serve",
                             "--port", str(port)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str, token: str | None = None, wait_s: float = 20.0) -> tuple[int, str]:
    deadline = time.time() + wait_s
    while True:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.integration
def test_metrics_serve_needs_its_token(serving: tuple[int, Any]) -> None:
    port, _proc = serving
    assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 401
    status, body = _get(f"http://127.0.0.1:{port}/metrics", token="s3cret")
    assert status == 200 and "sluice_requests_total" in body


# --- sluice flower --------------------------------------------------------------------------

@pytest.mark.integration
def test_flower_shows_both_lanes_queues(filled: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli.main", "flower", "--port",
                             str(port)], env={**filled, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, names = time.time() + 45, set()
        while time.time() < deadline and not {"interactive.api", "async.api"} <= names:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/queues/length", wait_s=30)
                if status == 200:
                    names = {q["name"] for q in json.loads(body)["active_queues"]}
            except OSError:
                pass
            time.sleep(0.5)
        assert {"interactive.api", "async.api"} <= names, names
    finally:
        proc.terminate()
        proc.wait(timeout=15)
