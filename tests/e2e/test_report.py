"""``sluice report``: the HTML page and PNG charts, with every number checked against the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ops.report.html import money, read_embedded
from tests.e2e.cli_support import fill_ledger, sluice, sluice_json, sql_totals
from tests.services import run_token

pytestmark = pytest.mark.integration
TEAM = f"rep{run_token()}".replace("_", "")
CHARTS = ("spend_per_feature.png", "savings_per_lever.png", "route_mix.png",
          "cache_hit_rate.png", "top_spenders.png")


@pytest.fixture(scope="module")
def report(gateway: Any, integration_env: dict[str, str], tmp_path_factory: Any
           ) -> tuple[dict[str, Any], Path]:
    """A report of team ``TEAM`` after real requests: (the --json output, the HTML path)."""
    assert fill_ledger(gateway, TEAM) == 11
    out = tmp_path_factory.mktemp("report") / "report.html"
    data = sluice_json(["report", "--team", TEAM, "--since", "1d", "--out", str(out)],
                       integration_env)
    return data, out


def test_charts_are_real_pngs(report: tuple[dict[str, Any], Path]) -> None:
    data, out = report
    folder = out.with_name("report_files")
    for name in CHARTS:
        png = folder / name
        assert png.stat().st_size > 5_000, f"{name} is (nearly) empty"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"report_files/{name}" in out.read_text()
    assert set(data["charts"]) == set(CHARTS)


def test_totals_match_the_ledger(report: tuple[dict[str, Any], Path], pg_url: str) -> None:
    _data, out = report
    page = out.read_text()
    figures = read_embedded(page)
    (n, cost, base, hits), = sql_totals(pg_url, TEAM).values()
    total = figures["total"]
    assert (total["requests"], Decimal(total["cost"]), Decimal(total["baseline_cost"]),
            total["cache_hits"]) == (n, cost, base, hits)
    # What a reader sees is the same figure, not a recomputation of it.
    assert money(cost) in page and money(base) in page


def test_breakdowns_match_the_ledger(report: tuple[dict[str, Any], Path], pg_url: str) -> None:
    figures = read_embedded(report[1].read_text())
    for section, column, names in (("by_feature", "feature", ["team", "feature"]),
                                   ("by_route", "model", ["tier", "model"]),
                                   ("top_users", "user_id", ["user"]),
                                   ("by_outcome", "outcome", ["outcome"])):
        sql = sql_totals(pg_url, TEAM, group=column)
        key = names[-1]
        got = {line[key]: (line["requests"], Decimal(line["cost"]), line["cache_hits"])
               for line in figures[section]}
        assert got == {str(k): (v[0], v[1], v[3]) for k, v in sql.items()}, section
    over_time = figures["feature_over_time"]
    assert sum(Decimal(x["cost"]) for x in over_time) == Decimal(figures["total"]["cost"])
    levers = figures["total"]
    assert (Decimal(levers["saved_by_response_cache"]) + Decimal(levers["saved_by_routing"])
            + Decimal(levers["saved_by_prompt_caching"]) + Decimal(levers["cost"])
            == Decimal(levers["baseline_cost"]))


def test_whole_ledger_report_and_timing(integration_env: dict[str, str], pg_url: str,
                                        tmp_path: Path, report: Any) -> None:
    out = tmp_path / "all.html"
    data = sluice_json(["report", "--out", str(out)], integration_env)
    (n, cost, _b, _h), = sql_totals(pg_url).values()
    assert (data["figures"]["total"]["requests"], Decimal(data["figures"]["total"]["cost"])) == (
        n, cost)
    assert data["seconds"]["total_s"] < 30  # charts of a small ledger take a few seconds
    plain = sluice(["report", "--out", str(tmp_path / "again.html")], integration_env)
    assert plain.returncode == 0 and "5 charts" in plain.stdout
