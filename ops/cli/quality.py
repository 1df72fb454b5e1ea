"""``sluice quality``: judged agreement per org, feature and tier (and ladder rung), the
floor's moves, and reverts (each org's feature on its own)."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)
quality_app = typer.Typer(help="Shadow-judged quality of routing, per feature and tier.",
                          invoke_without_command=True)

_URL = typer.Option(help="Database URL (default: settings).")
_ORG = typer.Option(help="Only this org (default: every org, each shown as its own).")


@quality_app.callback()
def show(
    ctx: typer.Context,
    feature: Annotated[Optional[str], typer.Option(help="Only this feature.")] = None,
    org: Annotated[Optional[str], _ORG] = None,
    since: Annotated[Optional[str], typer.Option(help="Only since: 24h, 7d, or ISO.")] = None,
    url: Annotated[Optional[str], _URL] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Pairs judged, agreement with its confidence interval, and the money at stake."""
    if ctx.invoked_subcommand is not None:
        return
    from ops.cli.audit import parse_since
    from ops.quality import quality_rows

    settings, sessions, engine = _open(url)
    try:
        with sessions() as s:
            rows = quality_rows(s, settings, feature=feature, org=org,
                                since=parse_since(since) if since else None)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows]))
        return
    conf = f"{settings.quality.confidence:.0%}"
    table = Table(title=f"Quality (agreement with a {conf} Wilson interval)", title_justify="left")
    left = ("org", "feature", "tier", "task type")
    for col in (*left, "rung", "judged", "agreement", f"{conf} interval", "floor", "saved",
                "saved on disagreement", "shadow $", "judge $", "👍/👎"):
        table.add_column(col, justify="left" if col in left else "right")
    for r in rows:
        mark = " [red]below floor[/]" if r.below_floor else ""
        table.add_row(escape(r.org), escape(r.feature), r.tier, escape(r.task_type or "-"),
                      "-" if r.rung is None else str(r.rung), str(r.judged), f"{r.agreement:.1%}",
                      f"[{r.low:.1%}, {r.high:.1%}]{mark}",
                      "-" if r.floor is None else f"{r.floor:.0%}", f"${r.saved:,.6f}",
                      f"${r.saved_on_disagreement:,.6f}", f"${r.shadow_cost:,.6f}",
                      f"${r.judge_cost:,.6f}", f"{r.thumbs_up}/{r.thumbs_down}")
    console.print(table)


@quality_app.command("moves")
def moves_cmd(
    feature: Annotated[Optional[str], typer.Option(help="Only this feature.")] = None,
    org: Annotated[Optional[str], _ORG] = None,
    url: Annotated[Optional[str], _URL] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every routing move the floor (or an operator's revert) made, newest first."""
    from models.db.quality import moves

    _, sessions, engine = _open(url)
    try:
        with sessions() as s:
            found = moves(s, feature, org=org)
    finally:
        engine.dispose()
    rows = [{"id": m.id, "at": m.created_at.isoformat(), "org": m.org, "feature": m.feature,
             "before": m.before, "after": m.after, "direction": m.direction,
             "actor": m.actor, "reverts": m.reverts, "reason": m.reason} for m in found]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="Routing moves", title_justify="left")
    for col in ("id", "at", "org", "feature", "threshold / target", "direction", "actor",
                "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), str(r["at"])[:19], escape(str(r["org"])),
                      escape(str(r["feature"])),
                      f"{r['before']:.3f} -> {r['after']:.3f}", str(r["direction"]),
                      escape(str(r["actor"])), escape(str(r["reason"])))
    console.print(table)


@quality_app.command("revert")
def revert_cmd(
    feature: Annotated[str, typer.Argument(help="The feature whose newest move to undo.")],
    org: Annotated[Optional[str], typer.Option(
        help="Whose feature (needed when the feature name has moves in more than one org).")]
    = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    actor: Annotated[Optional[str], typer.Option(help="Who (default: the OS user).")] = None,
    url: Annotated[Optional[str], _URL] = None,
) -> None:
    """Undo an org's feature's newest routing move (recorded as a move of its own, and
    audited); other orgs' features of that name are left as they are."""
    from models.domain.errors import ValidationError
    from scheduler.quality_floor import revert

    _, sessions, engine = _open(url)
    try:
        with sessions() as s:
            move = revert(s, feature, actor=actor or getpass.getuser(), reason=reason, org=org)
            s.commit()
    except ValidationError as exc:
        err_console.print(f"[red]{escape(exc.message)}[/]")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    console.print(f"feature {escape(feature)} of org {escape(move.org)}: threshold "
                  f"{move.before:.3f} -> {move.after:.3f}")


def _open(url: str | None) -> tuple:
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings

    settings = load_settings()
    engine = make_engine(url or settings.database.url)
    return settings, session_factory(engine), engine
