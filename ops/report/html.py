"""The spend report as one self-describing HTML page: tables, chart images, the figures as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import Any

from ops.report.data import ReportData, report_json

#: The id of the script element holding every figure as JSON (tools and tests read it).
DATA_ID = "sluice-report-data"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{padding:.25rem .6rem;
border-bottom:1px solid #ddd}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:bold;border-top:2px solid #999}img{max-width:100%;margin:.5rem 0 1.5rem}
.kpi{display:inline-block;margin:0 2rem 1rem 0}.kpi b{display:block;font-size:1.6rem}
"""


def money(value: Decimal) -> str:
    """USD with enough places for sub-cent spend."""
    return f"${value:,.6f}" if abs(value) < 1 else f"${value:,.2f}"


def share(part: Decimal | int, whole: Decimal | int) -> str:
    """``part`` as a percentage of ``whole``."""
    return "-" if not whole else f"{Decimal(part) / Decimal(whole) * 100:.1f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_from: int,
          total: Sequence[Any] | None = None) -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned numbers."""
    def cells(values: Sequence[Any], tag: str) -> str:
        return "".join(f"<{tag}{' class=n' if i >= numeric_from else ''}>{escape(str(v))}"
                       f"</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    if total is not None:
        body += f"<tr class=total>{cells(total, 'td')}</tr>"
    return f"<table><tr>{cells(headers, 'th')}</tr>{body}</table>"


def _spend_rows(lines: Sequence[Any], width: int) -> list[list[Any]]:
    return [[*(("(none)" if k == "None" else k) for k in line.key[:width]), line.requests,
             line.cache_hits, share(line.cache_hits, line.requests), money(line.cost),
             money(line.baseline_cost), share(line.saved, line.baseline_cost)]
            for line in lines]


_SPEND_COLS = ["requests", "cache hits", "hit rate", "paid", "all-flagship", "saved"]


def render(data: ReportData, charts: dict[str, str]) -> str:
    """The whole page; ``charts`` maps a title to the image path relative to the page."""
    t = data.total
    window = (f"{data.since:%Y-%m-%d %H:%M} UTC" if data.since else "the first request") + \
        " to " + (f"{data.until:%Y-%m-%d %H:%M} UTC" if data.until else "now")
    who = f" — team {escape(data.team)}" if data.team else ""
    kpis = [("requests", str(t.requests)), ("paid", money(t.cost)),
            ("all-flagship, no cache", money(t.baseline_cost)),
            ("saved", f"{money(t.saved)} ({share(t.saved, t.baseline_cost)})"),
            ("response-cache hit rate", share(t.cache_hits, t.requests))]
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>sluicegate spend report"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>sluicegate spend report{who}</h1>",
             f"<p>From {escape(window)}; generated {data.generated_at:%Y-%m-%d %H:%M:%S} UTC "
             "from the ledger. The baseline is what the same requests would have cost on the "
             "flagship model with no cache of any kind.</p>",
             "".join(f"<div class=kpi id='kpi-{escape(k.split()[0])}'>{escape(k)}<b>{escape(v)}"
                     f"</b></div>" for k, v in kpis),
             "<h2>Savings per lever</h2>",
             table(["lever", "saved", "share of baseline"],
                   [[k, money(v), share(v, t.baseline_cost)] for k, v in data.levers().items()],
                   numeric_from=1, total=["baseline", money(t.baseline_cost), "100.0%"]),
             "<h2>Spend by feature</h2>",
             table(["team", "feature", *_SPEND_COLS], _spend_rows(data.by_feature, 2),
                   numeric_from=2, total=["total", "", *_spend_rows([t], 0)[0]]),
             "<h2>Route mix</h2>",
             table(["tier", "model", *_SPEND_COLS], _spend_rows(data.by_route, 2),
                   numeric_from=2),
             "<h2>Top spenders</h2>",
             table(["team", *_SPEND_COLS], _spend_rows(data.top_teams, 1), numeric_from=1),
             table(["user", *_SPEND_COLS], _spend_rows(data.top_users, 1), numeric_from=1),
             "<h2>Outcomes</h2>",
             table(["outcome", *_SPEND_COLS], _spend_rows(data.by_outcome, 1), numeric_from=1),
             "<h2>Charts</h2>"]
    parts += [f"<h3>{escape(title)}</h3><img alt='{escape(title)}' src='{escape(src)}'>"
              for title, src in charts.items()]
    blob = json.dumps(report_json(data), indent=1).replace("</", "<\\/")
    parts.append(f"<script type=application/json id={DATA_ID}>{blob}</script></body></html>")
    return "\n".join(parts)


def read_embedded(page: str) -> dict[str, Any]:
    """The figures a rendered page carries (the inverse of what :func:`render` embeds)."""
    start = page.index(f"id={DATA_ID}>") + len(f"id={DATA_ID}>")
    return dict(json.loads(page[start:page.index("</script>", start)]))
