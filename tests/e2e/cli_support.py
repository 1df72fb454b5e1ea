"""Helpers of the CLI end-to-end tests: run ``sluice`` for real, fill and sum the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def sluice(args: list[str], env: dict[str, str] | None = None, *, timeout: float = 180.0,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process, as an operator would; never raises on a non-zero exit."""
    full = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops.cli.main", *args], env=full,
                          cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def sluice_json(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> Any:
    """Run the CLI with ``--json`` and parse its stdout (asserting it exited 0)."""
    done = sluice([*args, "--json"], env, **kw)
    assert done.returncode == 0, f"sluice {' '.join(args)} failed:\n{done.stderr}"
    return json.loads(done.stdout)


def fill_ledger(gateway: Any, team: str) -> int:
    """Send real requests of ``team`` through the gateway: three features, cheap and flagship
    routes, two users, and repeats so some are answered from the response cache."""
    asks = [("title-rephrase", "cheap", f"Rephrase this title: {item}")
            for item in ("blue mug", "oak desk", "blue mug", "red kettle", "blue mug")]
    asks += [("category-classify", "auto", f"Classify: {item}")
             for item in ("yoga mat", "chef knife", "yoga mat")]
    asks += [("seo-article", "flagship", f"Write a detailed article about the {item}.")
             for item in ("tent", "blender", "tent")]
    for i, (feature, model, text) in enumerate(asks):
        gateway.complete({"request_id": f"{team}-{i}-{uuid.uuid4().hex[:6]}", "team": team,
                          "feature": feature, "user": f"u{i % 2}", "model": model,
                          "lane": "async" if feature == "seo-article" else "interactive",
                          "max_tokens": 200 if feature == "seo-article" else 30,
                          "static": {"system": f"You work for the {feature} team."},
                          "messages": [{"role": "user", "content": text}]}, timeout=60)
    gateway.flush()  # cache-hit rows are written in the background
    return len(asks)


def sql_totals(pg_url: str, team: str | None = None, group: str | None = None
               ) -> dict[Any, tuple[int, Decimal, Decimal, int]]:
    """count, sum(cost), sum(baseline_cost), cache hits per ``group`` (or one ``None`` key),
    read with plain SQL so the CLI's own queries are not what checks them."""
    import psycopg

    where, params = ("WHERE team = %s", [team]) if team else ("", [])
    # The item-cache part of a partly cached embedding request is a row of its own, but not
    # a request (nor a whole-request hit): its money counts.
    part = "(kind = 'embedding' AND outcome = 'cache_hit' AND request_id LIKE '%%:cached')"
    sql = (f"SELECT {group or 'NULL'}, sum(CASE WHEN {part} THEN 0 ELSE 1 END), "
           f"coalesce(sum(cost), 0), coalesce(sum(baseline_cost), 0), "
           f"sum(CASE WHEN cache_hit AND NOT {part} THEN 1 ELSE 0 END) "
           f"FROM ledger {where} {'GROUP BY ' + group if group else ''}")
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(sql, params).fetchall()
    return {r[0]: (int(r[1]), Decimal(r[2]), Decimal(r[3]), int(r[4] or 0)) for r in rows}
