"""``sluice report``: an HTML spend report with PNG charts, every number read from the ledger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write; charts go "
                                      "to a <name>_files folder beside it.")] = Path(
        "report.html"),
    since: Annotated[Optional[str], typer.Option(
        help="Start: 7d, 24h, 30m, 2w, today, or an ISO date/datetime (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option(help="End (exclusive), same forms.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team's requests.")] = None,
    db: Annotated[Optional[str], typer.Option(
        help="Ledger URL (default SLUICE_DATABASE__URL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures and file paths as "
                                          "JSON.")] = False,
) -> None:
    """Write an HTML spend report with PNG charts, every number read from the ledger.

    Charts: spend per feature over time, savings per lever, route mix, cache hit rate, top
    spenders. The page embeds its figures as JSON (script id sluice-report-data).

    Exit codes: 0 ok, 1 the ledger could not be read or a file not written, 2 bad usage.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from models.domain.errors import SluiceError
    from ops.cli.main import console, err_console
    from ops.cli.spend import (EXIT_FAILED, EXIT_USAGE, UsageError, describe_failure, fail,
                               ledger_session, parse_when)
    from ops.report.charts import CHARTS, draw_all
    from ops.report.data import collect, report_json
    from ops.report.html import render

    try:
        start, end = parse_when(since), parse_when(until)
    except UsageError as exc:
        raise fail(err_console, str(exc), EXIT_USAGE) from None
    if out.suffix.lower() not in (".html", ".htm"):
        raise fail(err_console, f"--out {out} should name an .html file, e.g. report.html",
                   EXIT_USAGE)
    began = time.perf_counter()
    try:
        with ledger_session(db) as s:
            data = collect(s, since=start, until=end, team=team)
    except (SQLAlchemyError, SluiceError) as exc:
        raise fail(err_console, describe_failure(exc, db), EXIT_FAILED) from None
    queried = time.perf_counter()
    folder = out.with_name(out.stem + "_files")
    try:
        paths = draw_all(data, folder)
        page = render(data, {CHARTS[name][0]: f"{folder.name}/{name}" for name in paths})
        out.write_text(page, encoding="utf-8")
    except (OSError, RuntimeError) as exc:
        raise fail(err_console, f"cannot write the report to {out}: {exc}", EXIT_FAILED) \
            from None
    done = time.perf_counter()
    timing = {"query_s": round(queried - began, 3), "charts_and_html_s": round(done - queried, 3),
              "total_s": round(done - began, 3)}
    if as_json:
        from ops.cli.render import print_json

        print_json(console, {"html": str(out), "charts": {n: str(p) for n, p in paths.items()},
                             "seconds": timing, "figures": report_json(data)})
        return
    console.print(f"wrote {out} and {len(paths)} charts in {folder}/ "
                  f"({data.total.requests} requests; {timing['total_s']:.2f} s: ledger "
                  f"{timing['query_s']:.2f} s, charts and page {timing['charts_and_html_s']:.2f}"
                  " s)", highlight=False)
