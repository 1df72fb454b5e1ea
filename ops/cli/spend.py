"""``sluice spend``: the ledger's spend grouped any way, with totals and what each lever saved."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

#: What ``--by`` accepts; ``route`` is the routing decision's tier (cheap, flagship, ...).
GROUPS = ("feature", "team", "user", "model", "lane", "route", "tier", "provider", "org",
          "outcome", "kind", "task_type", "rung", "deployment", "purpose", "day", "hour")
_ALIASES = {"route": "tier"}
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: Exit codes every ledger command shares.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: the message says what to type instead (exit code 2)."""


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``7d``, ``24h``, ``90m``, ``2w`` (ago), ``today``, or an ISO date/datetime (UTC if naive)."""
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    now = now or datetime.now(timezone.utc)
    if value == "today":
        return datetime.combine(now.date(), datetime.min.time(), tzinfo=timezone.utc)
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}; use a span such as 7d, 24h, 30m or 2w, "
                         "'today', or an ISO date such as 2026-11-01 or 2026-11-01T09:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_groups(by: str) -> list[str]:
    """The ledger groups ``--by`` names (aliases resolved); a UsageError names a bad one."""
    names = [g.strip().lower() for g in by.split(",") if g.strip()]
    bad = [g for g in names if g not in GROUPS]
    if bad:
        raise UsageError(f"cannot group spend by {', '.join(bad)}; use any of "
                         f"{', '.join(GROUPS)} (comma-separated, e.g. --by team,feature)")
    return [_ALIASES.get(g, g) for g in names]


@contextmanager
def ledger_session(db: str | None = None) -> Iterator[Any]:
    """A read session on the ledger named by ``--db`` or ``SLUICE_DATABASE__URL``."""
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings

    url = db or load_settings().database.url
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def describe_failure(exc: BaseException, db: str | None = None) -> str:
    """A message an operator can act on when the ledger cannot be read."""
    from models.domain.settings import load_settings

    where = (db or load_settings().database.url).split("@")[-1]  # never echo credentials
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "no such table" in first or "does not exist" in first:
        return (f"the ledger at {where} has no tables yet ({first}); run `sluice migrate` "
                "against it first")
    return (f"cannot read the ledger at {where}: {first}; check that the database runs and that "
            "SLUICE_DATABASE__URL (or --db) points at it")


def fail(err: Console, message: str, code: int) -> typer.Exit:
    """Print ``message`` on stderr and return the Exit to raise."""
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def spend(
    by: Annotated[str, typer.Option(help="Group by, comma-separated: " + ", ".join(GROUPS)
                                    + ". Empty for totals only.")] = "team,feature",
    since: Annotated[Optional[str], typer.Option(
        help="Start: 7d, 24h, 30m, 2w, today, or an ISO date/datetime (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option(help="End (exclusive), same forms.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team's requests.")] = None,
    db: Annotated[Optional[str], typer.Option(
        help="Ledger URL (default SLUICE_DATABASE__URL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Spend from the ledger, grouped, with totals and savings per lever against all-flagship,
    and the embedding item cache's hit rate and savings per feature.

    Exit codes: 0 ok, 1 the ledger could not be read, 2 bad usage.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from models.db import embedding_stats
    from models.db import spend as spend_rows
    from models.domain.errors import SluiceError
    from ops.cli.cache import embedding_stats_table
    from ops.cli.main import console, err_console
    from ops.cli.render import levers_table, print_json, spend_json, spend_table

    try:
        groups = parse_groups(by)
        start, end = parse_when(since), parse_when(until)
    except UsageError as exc:
        raise fail(err_console, str(exc), EXIT_USAGE) from None
    try:
        with ledger_session(db) as s:
            lines = spend_rows.spend_lines(s, *groups, since=start, until=end, team=team)
            totals = spend_rows.spend_lines(s, since=start, until=end, team=team)
            # The per-item cache of embeddings (a request's items, not the request, hit).
            items = embedding_stats.by_feature(s, since=start, until=end, team=team)
    except (SQLAlchemyError, SluiceError, OSError) as exc:
        raise fail(err_console, describe_failure(exc, db), EXIT_FAILED) from None
    total = totals[0]
    if as_json:
        print_json(console, {"group_by": groups, "since": start and start.isoformat(),
                             "until": end and end.isoformat(), "team": team,
                             "lines": spend_json(lines, groups),
                             "total": spend_json([total], [])[0],
                             "embedding_items": [i.as_json() for i in items]})
        return
    scope = (f" (team {team})" if team else "") + (f" since {start:%Y-%m-%d %H:%M} UTC"
                                                   if start else "")
    if not total.requests:
        console.print(f"no requests in the ledger{scope}")
        return
    if groups:
        console.print(spend_table(f"Spend by {', '.join(groups)}{scope}", groups, lines))
        console.print(levers_table("Savings by lever", groups,
                                   lines + [_total_line(total, len(groups))]))
    else:
        console.print(levers_table(f"Spend{scope}", [""], [_total_line(total, 1)]))
    if items:
        console.print(embedding_stats_table(items))
    console.print(f"[bold]total[/]: {total.requests} requests, paid "
                  f"${total.cost:,.6f} against ${total.baseline_cost:,.6f} all-flagship "
                  f"with no cache ({_share(total.saved, total.baseline_cost)} saved)",
                  highlight=False)
    if total.estimated_cost:
        console.print(f"[bold]estimated[/]: ${total.estimated_cost:,.6f} of it is charged at "
                      "an estimate: attempts a provider may have billed with no bill we could "
                      "read (timeouts, broken streams, workers lost mid-call)", highlight=False)


def _total_line(line: Any, width: int) -> Any:
    from dataclasses import replace

    return replace(line, key=("total",) + ("",) * (width - 1))


def _share(part: Any, whole: Any) -> str:
    return "-" if not whole else f"{part / whole * 100:.1f}%"

