"""The spend table shows the reasoning and estimated columns only when some line has them,
and its totals add up every column it shows."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console

from models.db.spend import SpendLine
from ops.cli.render import spend_table


def _line(key: str, cost: str, *, reasoning: int = 0, estimated: str = "0") -> SpendLine:
    return SpendLine(key=(key,), requests=2, cache_hits=1, cost=Decimal(cost),
                     baseline_cost=Decimal("1.00"), input_tokens=10, output_tokens=5,
                     reasoning_tokens=reasoning, estimated_cost=Decimal(estimated))


def _render(lines: list[SpendLine]) -> tuple[list[str], str]:
    table = spend_table("t", ["team"], lines)
    console = Console(width=200, record=True)
    console.print(table)
    return [str(c.header) for c in table.columns], console.export_text()


def test_all_zero_columns_are_left_out() -> None:
    headers, text = _render([_line("a", "0.25"), _line("b", "0.50")])
    assert headers == ["team", "requests", "cache hits", "output tokens", "cost",
                       "no-lever cost", "saved"]
    assert "$0.750000" in text and "$2.0000" in text and "62.5%" in text  # the totals


def test_a_column_some_line_has_is_shown_with_its_total() -> None:
    headers, text = _render([_line("a", "0.25", reasoning=7, estimated="0.10"),
                             _line("b", "0.50", reasoning=3)])
    assert "reasoning tokens" in headers and "of it estimated" in headers
    total = next(r for r in text.splitlines() if "total" in r)
    assert " 10 " in total and "$0.100000" in total
