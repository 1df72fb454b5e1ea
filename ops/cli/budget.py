"""``sluice budget set / list / show / rm``: hard limits and soft thresholds per scope, window."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from models.domain.budget import parse_soft, parse_usd, plain, usd

budget_app = typer.Typer(help="Budgets: hard limits that cannot be overshot, soft alerts.",
                         no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, soft_wrap=True)  # messages stay whole in logs and pipes

_SCOPE_HELP = "org, lane, team, feature or user."
_WINDOW_HELP = "hourly, daily, monthly or total."
_ORG_HELP = ("Whose budget: an org name. Default: team, feature and user budgets belong to "
             "the 'default' org; a lane budget without --org is deployment-wide (every org; "
             "at its hard limit the lane's queues pause); an org budget is its own org's.")


@contextmanager
def _session() -> Iterator[Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from models.db.engine import make_engine, session_factory
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from scheduler.governor import unreachable

    engine = make_engine(load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            yield s
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        err_console.print(f"[red]{unreachable(exc, 'use the budget tables').message}[/]")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()


@budget_app.command("set")
def set_cmd(
    scope: Annotated[str, typer.Argument(help=_SCOPE_HELP)],
    key: Annotated[str, typer.Argument(help="The org, lane, team, feature or user name.")],
    hard: Annotated[str, typer.Option(help="Hard limit in USD: requests that would pass it are "
                                           "refused.")],
    window: Annotated[str, typer.Option(help=_WINDOW_HELP)] = "daily",
    soft: Annotated[Optional[str], typer.Option(help="Soft threshold: USD or a share such as "
                                                     "80%; alerts once per window.")] = None,
    webhook: Annotated[Optional[str], typer.Option(help="URL that receives alerts as JSON "
                                                        "('' removes it).")] = None,
    org: Annotated[Optional[str], typer.Option(help=_ORG_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Create or change a budget (a new one counts the ledger's spend of its current window)."""
    from models.db.budgets import set_budget

    with _session() as s:
        limit = parse_usd(hard, "hard")
        budget = set_budget(s, scope, key, window, hard=limit, soft=parse_soft(soft, limit),
                            webhook_url=webhook, org=org)
        from ops.audit import record

        # Same transaction: the change and its audit row land together or not at all.
        record("budget.set", target=budget.name, reason=reason, actor=actor, session=s,
               detail={"hard": plain(limit), "soft": soft, "window": window,
                       "org": budget.org, "webhook": webhook is not None})
        s.commit()
    if as_json:
        console.print_json(data=budget_json(budget))
    else:
        console.print(f"budget [bold]{budget.name}[/] set: hard {_usd(budget.hard_limit)}, soft "
                      f"{_usd(budget.soft_limit)}; spent {_usd(budget.spent)} this window "
                      "(running producers pick it up within a second)")


@budget_app.command("list")
def list_cmd(
    scope: Annotated[Optional[str], typer.Option(help="Only this scope.")] = None,
    org: Annotated[Optional[str], typer.Option(
        help="Only this org's budgets ('*': the deployment-wide ones).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every budget with its spend, reservations, room and when its window resets."""
    from models.db.budgets import list_budgets

    with _session() as s:
        budgets = list_budgets(s, scope, org=org)
    if as_json:
        console.print_json(data=[budget_json(b) for b in budgets])
        return
    table = Table(title="Budgets", title_justify="left")
    for col in ("budget", "hard", "soft", "spent", "reserved", "room", "used", "resets", "state"):
        table.add_column(col, justify="right" if col not in ("budget", "state") else "left")
    for b in budgets:
        table.add_row(b.name, _usd(b.hard_limit), _usd(b.soft_limit), _usd(b.spent),
                      _usd(b.reserved), _usd(b.room), _share(b), _resets(b), _state(b))
    console.print(table)


@budget_app.command("show")
def show_cmd(
    scope: Annotated[str, typer.Argument(help=_SCOPE_HELP)],
    key: Annotated[str, typer.Argument(help="The org, lane, team, feature or user name.")],
    window: Annotated[str, typer.Option(help=_WINDOW_HELP)] = "daily",
    org: Annotated[Optional[str], typer.Option(help=_ORG_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One budget in detail: usage, open reservations, alerts and the pauses it caused."""
    from sqlalchemy import select

    from models.db.budgets import AlertRow, PauseRow, get_budget, open_reservations

    with _session() as s:
        budget = get_budget(s, scope, key, window, org=org)
        if budget is None:
            err_console.print(f"[red]no budget {_named(scope, key, window, org)}[/]; see "
                              "`sluice budget list`, or create it with `sluice budget set`")
            raise typer.Exit(1)
        count, held = open_reservations(s, budget.id)
        alerts = s.scalars(select(AlertRow).where(AlertRow.budget_id == budget.id)
                           .order_by(AlertRow.created_at.desc()).limit(10)).all()
        pauses = s.scalars(select(PauseRow.queue).where(PauseRow.budget_id == budget.id)).all()
    data = budget_json(budget) | {
        "open_reservations": count, "open_reserved": str(held), "paused_queues": list(pauses),
        "alerts": [{"kind": a.kind, "at": _iso(a.created_at), "message": a.message,
                    "delivered": a.delivered_at is not None} for a in alerts]}
    if as_json:
        console.print_json(data=data)
        return
    console.print(f"[bold]{budget.name}[/]  state: {_state(budget)}")
    console.print(f"  hard {_usd(budget.hard_limit)}   soft {_usd(budget.soft_limit)}   "
                  f"spent {_usd(budget.spent)}   reserved {_usd(budget.reserved)} "
                  f"({count} open)   room {_usd(budget.room)}   used {_share(budget)}")
    console.print(f"  window from {_iso(budget.window_start)}, resets {_resets(budget)}")
    if budget.webhook_url:
        console.print(f"  alerts go to {budget.webhook_url}")
    if pauses:
        console.print(f"  [red]paused queues[/]: {', '.join(pauses)}")
    for a in data["alerts"]:
        console.print(f"  alert {a['kind']} at {a['at']}: {a['message']}")


@budget_app.command("rm")
def rm_cmd(
    scope: Annotated[str, typer.Argument(help=_SCOPE_HELP)],
    key: Annotated[str, typer.Argument(help="The org, lane, team, feature or user name.")],
    window: Annotated[str, typer.Option(help=_WINDOW_HELP)] = "daily",
    org: Annotated[Optional[str], typer.Option(help=_ORG_HELP)] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Remove a budget (its pauses and alerts go with it)."""
    from models.db.budgets import delete_budget

    name = _named(scope, key, window, org)
    with _session() as s:
        found = delete_budget(s, scope, key, window, org=org)
        if found:
            from ops.audit import record

            record("budget.rm", target=name, reason=reason, actor=actor, session=s)
        s.commit()
    if not found:
        err_console.print(f"[red]no budget {name}[/]")
        raise typer.Exit(1)
    console.print(f"budget {name} removed")


def _named(scope: str, key: str, window: str, org: str | None) -> str:
    """How a budget given on the command line is named (as Budget.name does)."""
    from models.domain.budget import Budget

    return Budget(scope, key, window, Decimal(0), org=org or "").name


def budget_json(budget: Any) -> dict[str, Any]:
    """A budget as JSON-safe values (money as exact strings, never floats)."""
    def money(v: Any) -> str | None:
        return None if v is None else plain(v)

    return {"budget": budget.name, "org": budget.org, "scope": budget.scope, "key": budget.key,
            "window": budget.window, "hard_limit": money(budget.hard_limit),
            "soft_limit": money(budget.soft_limit), "spent": money(budget.spent),
            "reserved": money(budget.reserved), "room": money(budget.room),
            "window_start": _iso(budget.window_start),
            "resets_at": _iso(budget.resets_at) if budget.resets_at else None,
            "webhook_url": budget.webhook_url, "state": _state(budget)}


def _usd(value: Any) -> str:
    return usd(value)


def _share(b: Any) -> str:
    return "-" if not b.hard_limit else f"{float(b.spent / b.hard_limit) * 100:.1f}%"


def _state(b: Any) -> str:
    if b.room <= 0 or b.spent >= b.hard_limit:
        return "hard limit"
    return "soft threshold" if b.soft_reached() else "ok"


def _resets(b: Any) -> str:
    return "never" if b.resets_at is None else _iso(b.resets_at)


def _iso(ts: datetime) -> str:
    ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
