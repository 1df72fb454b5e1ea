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


def spend_table(title: str, headers: list[str], lines: list[Any]) -> Table:
    """A table of ledger SpendLines: requests, cache hits, cost, baseline, saved."""
    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h)
    for col in ("requests", "cache hits", "output tokens", "reasoning tokens", "cost",
                "of it estimated", "no-lever cost", "saved"):
        table.add_column(col, justify="right")
    tot_cost = tot_base = tot_est = Decimal(0)
    tot_n = tot_hits = tot_out = tot_reasoning = 0
    for line in lines:
        reasoning = line.reasoning_tokens
        table.add_row(*line.key, str(line.requests), str(line.cache_hits),
                      str(line.output_tokens), str(reasoning), money(line.cost),
                      money(line.estimated_cost), money(line.baseline_cost),
                      pct(line.saved, line.baseline_cost))
        tot_cost += line.cost
        tot_est += line.estimated_cost
        tot_base += line.baseline_cost
        tot_n += line.requests
        tot_hits += line.cache_hits
        tot_out += line.output_tokens
        tot_reasoning += reasoning
    table.add_section()
    table.add_row("total", *[""] * (len(headers) - 1), str(tot_n), str(tot_hits),
                  str(tot_out), str(tot_reasoning), money(tot_cost), money(tot_est),
                  money(tot_base),
                  pct(tot_base - tot_cost, tot_base), style="bold")
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
