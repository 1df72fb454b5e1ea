"""``sluice audit``: the operator actions in the audit table (pauses, budgets, keys)."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, soft_wrap=True)

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``24h``, ``7d``, ``30m`` ... before now, or an ISO 8601 time (UTC when no offset)."""
    now = now or datetime.now(timezone.utc)
    m = _SPAN.match(text.strip())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"--since takes a span such as 24h or 7d, or an ISO time, "
                                 f"not {text!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def audit(
    since: Annotated[Optional[str], typer.Option(help="Only since: 24h, 7d, or an ISO time.")]
    = None,
    action: Annotated[Optional[str], typer.Option(help="Only this action, e.g. queues.pause.")]
    = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest).")] = 1000,
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Who paused or resumed queues, changed budgets, flushed the cache or minted keys, and why."""
    from sqlalchemy.exc import SQLAlchemyError

    from models.db.audit import list_actions
    from models.db.engine import make_engine, session_factory
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings

    start = parse_since(since) if since else None
    engine = make_engine(url or load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            entries = list_actions(s, since=start, action=action, limit=limit)
    except (SluiceError, SQLAlchemyError) as exc:
        err_console.print(f"[red]cannot read the audit table: {escape(str(exc).splitlines()[0])}"
                          "[/]; run `sluice migrate`")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([e.as_json() for e in entries]))
        return
    table = Table(title="Audit", title_justify="left")
    for col in ("at (UTC)", "actor", "action", "target", "reason"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                      escape(e.actor), e.action, escape(e.target), escape(e.reason))
    console.print(table)
