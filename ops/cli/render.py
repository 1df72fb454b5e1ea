"""Rich tables and JSON output shared by CLI commands."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table


def money(value: Decimal) -> str:
    """USD with enough places for sub-cent requests."""
    return f"${value:,.6f}" if abs(value) < 1 else f"${value:,.4f}"


def pct(part: Decimal, whole: Decimal) -> str:
    """``part`` as a share of ``whole``."""
    return "-" if not whole else f"{float(part) / float(whole) * 100:.1f}%"


#: The spend table's columns in USD.
MONEY_COLUMNS = ("cost", "of it estimated", "no-lever cost")


def spend_table(title: str, headers: list[str], lines: list[Any]) -> Table:
    """A table of ledger SpendLines: requests, cache hits, cost, baseline, saved. The reasoning
    and estimated columns show only when some line has them (a table that fits the terminal
    keeps its names whole)."""
    # (header, the line's value, shown even when every line has zero)
    cols: list[tuple[str, Any, bool]] = [
        ("requests", lambda x: x.requests, True), ("cache hits", lambda x: x.cache_hits, True),
        ("output tokens", lambda x: x.output_tokens, True),
        ("reasoning tokens", lambda x: x.reasoning_tokens, False),
        ("cost", lambda x: x.cost, True), ("of it estimated", lambda x: x.estimated_cost, False),
        ("no-lever cost", lambda x: x.baseline_cost, True)]
    cols = [c for c in cols if c[2] or any(c[1](line) for line in lines)]
    table = Table(title=title, title_justify="left")
    for h in [*headers, *(c[0] for c in cols), "saved"]:
        table.add_column(h, justify="left" if h in headers else "right")

    def cells(values: list[Any]) -> list[str]:
        return [money(v) if isinstance(v, Decimal) else str(v) for v in values]

    for line in lines:
        table.add_row(*line.key, *cells([c[1](line) for c in cols]),
                      pct(line.saved, line.baseline_cost))
    totals = [sum((c[1](line) for line in lines), Decimal(0) if c[0] in MONEY_COLUMNS else 0)
              for c in cols]
    cost = sum((line.cost for line in lines), Decimal(0))
    base = sum((line.baseline_cost for line in lines), Decimal(0))
    table.add_section()
    table.add_row("total", *[""] * (len(headers) - 1), *cells(totals), pct(base - cost, base),
                  style="bold")
    return table


def spend_json(lines: list[Any], headers: list[str]) -> list[dict[str, Any]]:
    """SpendLines as JSON-safe dicts (money as strings, never floats)."""
    return [dict(zip(headers, line.key), requests=line.requests, cache_hits=line.cache_hits,
                 input_tokens=line.input_tokens, output_tokens=line.output_tokens,
                 reasoning_tokens=line.reasoning_tokens,
                 cache_read_tokens=line.cache_read_tokens,
                 prompt_cache_hit_rate=(round(line.cache_read_tokens / line.input_tokens, 4)
                                        if line.input_tokens else 0.0),
                 volatile_prefix_requests=line.volatile_prefix, cost=str(line.cost),
                 estimated_cost=str(line.estimated_cost), attempts=line.attempts,
                 list_cost=str(line.list_cost), baseline_cost=str(line.baseline_cost),
                 saved=str(line.saved), saved_by_response_cache=str(line.saved_by_response_cache),
                 saved_by_routing=str(line.saved_by_routing),
                 saved_by_prompt_caching=str(line.saved_by_prompt_caching)) for line in lines]


def print_json(console: Console, data: Any) -> None:
    """Print ``data`` as JSON, bypassing rich markup."""
    console.print_json(json.dumps(data, default=str))


def levers_table(title: str, headers: list[str], lines: list[Any]) -> Table:
    """What each lever saved, per group, against the all-flagship no-cache baseline."""
    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h)
    for col in ("no-lever cost", "response cache", "routing", "prompt caching", "paid",
                "saved"):
        table.add_column(col, justify="right")
    for line in lines:
        table.add_row(*line.key, money(line.baseline_cost), money(line.saved_by_response_cache),
                      money(line.saved_by_routing), money(line.saved_by_prompt_caching),
                      money(line.cost), pct(line.saved, line.baseline_cost))
    return table


def levers_json(line: Any) -> dict[str, str]:
    """One SpendLine's savings per lever as JSON-safe strings."""
    return {"baseline_cost": str(line.baseline_cost), "cost": str(line.cost),
            "response_cache": str(line.saved_by_response_cache),
            "routing": str(line.saved_by_routing),
            "prompt_caching": str(line.saved_by_prompt_caching), "saved": str(line.saved)}
