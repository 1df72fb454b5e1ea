"""``sluice advise``: which lever would pay off where, in dollars a month, from the ledger."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 180)


def advise(
    feature: Annotated[Optional[str], typer.Option(help="Only this feature.")] = None,
    org: Annotated[Optional[str], typer.Option(
        help="Only this org's features (default: every org's, each apart).")] = None,
    since: Annotated[str, typer.Option(help="The window read: 30d, 7d, 24h or an ISO time.")]
    = "30d",
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per feature, ranked by USD a month: each lever's action, assumption and estimate."""
    from models.db.engine import make_engine, session_factory
    from models.domain.catalogue import load_catalogue
    from models.domain.settings import load_settings
    from ops.advise import advise as run, budget_warnings
    from models.domain.budget import qualified
    from ops.cli.audit import parse_since

    settings = load_settings()
    engine = make_engine(url or settings.database.url)
    try:
        with session_factory(engine)() as s:
            lines = run(s, load_catalogue(settings.prices_path), since=parse_since(since),
                        feature=feature, org=org)
            budgets = budget_warnings(s, org=org)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"advice": [a.as_json() for a in lines], "budgets": budgets}))
        return
    table = Table(title=f"Cost advice (ledger since {since}, scaled to 30 days)",
                  title_justify="left")
    for col in ("$/month", "feature", "lever", "action", "assumption"):
        table.add_column(col, justify="right" if col == "$/month" else "left")
    for a in lines:
        name = qualified(a.org, a.feature)
        table.add_row(f"${a.monthly:,.2f}", escape(name), a.lever, escape(a.action),
                      escape(a.assumption))
    console.print(table)
    for line in budgets:
        console.print(escape(line))
