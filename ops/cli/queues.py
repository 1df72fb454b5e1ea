"""``sluice queues pause / resume / status``: durable pauses, applied on every worker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

queues_app = typer.Typer(help="Pause and resume queues; see depth, consumers and pause reasons.",
                         no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, soft_wrap=True)  # messages stay whole in logs and pipes
_TARGET_HELP = "Queues: a name such as interactive.api, a lane (interactive, async) or 'all'."


def expand(targets: list[str]) -> list[str]:
    """Queue names from names, lanes and ``all``; raises typer.BadParameter on anything else."""
    from queues.names import LANES, QUEUES, queues_of

    out: list[str] = []
    for t in targets:
        if t == "all":
            found = list(QUEUES)
        elif t in LANES:
            found = queues_of(lane=t)
        elif t in QUEUES:
            found = [t]
        else:
            raise typer.BadParameter(f"unknown queue {t!r}; use one of {', '.join(QUEUES)}, a "
                                     f"lane ({', '.join(LANES)}) or 'all'")
        out += [q for q in found if q not in out]
    return out


@contextmanager
def _wired() -> Iterator[tuple[Any, Any]]:
    """The ledger sessions and the Celery app of the configured installation."""
    from models.db.engine import make_engine, session_factory
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from queues.app import create_app

    settings = load_settings()
    engine = make_engine(settings.database.url)
    app = create_app(settings)
    try:
        yield session_factory(engine), app
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    finally:
        app.close()
        engine.dispose()


@queues_app.command("pause")
def pause_cmd(
    targets: Annotated[list[str], typer.Argument(help=_TARGET_HELP)],
    reason: Annotated[str, typer.Option(help="Why: `sluice queues status` shows it.")],
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Stop every worker consuming the queues, durably (workers started later honour it too)."""
    from scheduler.governor import pause

    queues = expand(targets)
    with _wired() as (sessions, app):
        added = pause(sessions, queues, f"operator: {reason}", control=app.control)
    from ops.audit import record

    record("queues.pause", target=",".join(queues), reason=reason, actor=actor,
           detail={"queues": queues, "already_paused": not added})
    console.print(f"paused {', '.join(queues)}" + ("" if added else " (already paused)")
                  + "; producers refuse new requests for them with QueuePaused")


@queues_app.command("resume")
def resume_cmd(
    targets: Annotated[list[str], typer.Argument(help=_TARGET_HELP)],
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Lift every pause (operator and budget) of the queues; workers consume them again."""
    from scheduler.governor import resume

    queues = expand(targets)
    with _wired() as (sessions, app):
        free = resume(sessions, queues, control=app.control)
    from ops.audit import record

    record("queues.resume", target=",".join(queues), reason=reason, actor=actor,
           detail={"queues": queues, "resumed": list(free)})
    console.print(f"resumed {', '.join(free) or 'nothing'}; a budget that is still exhausted "
                  "pauses its queues again at its next refusal (raise it with `sluice budget "
                  "set`)")


@queues_app.command("status")
def status_cmd(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for workers to answer.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    queue: Annotated[Optional[list[str]], typer.Option(help="Only these queues.")] = None,
) -> None:
    """Each queue: paused or not and why, messages waiting, and which workers consume it."""
    from queues.names import QUEUES
    from scheduler.governor import paused_queues

    names = expand(queue) if queue else list(QUEUES)
    with _wired() as (sessions, app):
        with sessions() as s:
            paused = paused_queues(s)
        depth = queue_depths(app, names)
        consumers = queue_consumers(app, timeout)
    rows: list[dict[str, Any]] = [{"queue": q, "paused": q in paused, "reasons": paused.get(q, []),
             "depth": depth.get(q), "consumers": consumers.get(q, [])} for q in names]
    if as_json:
        console.print_json(data=rows)
        return
    table = Table(title="Queues", title_justify="left")
    for col in ("queue", "state", "depth", "consumers", "reason"):
        table.add_column(col, justify="right" if col == "depth" else "left")
    for r in rows:
        table.add_row(r["queue"], "[red]paused[/]" if r["paused"] else "flowing",
                      "-" if r["depth"] is None else str(r["depth"]),
                      ", ".join(r["consumers"]) or "-", "; ".join(r["reasons"]))
    console.print(table)


def queue_depths(app: Any, names: list[str]) -> dict[str, int | None]:
    """Messages waiting per queue, as the broker reports them (None where it cannot tell)."""
    out: dict[str, int | None] = {}
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            # Redis keeps no empty list, so "no such queue" there just means nothing waits.
            missing = 0 if conn.transport.driver_type == "redis" else None
            for q in names:
                try:
                    out[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
                except Exception:  # noqa: BLE001 - an undeclared queue simply has no depth
                    out[q] = missing
    except Exception:  # noqa: BLE001 - broker down: status still shows the pauses
        return {q: None for q in names}
    return out


def queue_consumers(app: Any, timeout: float) -> dict[str, list[str]]:
    """Worker names per queue, from the workers' own answer (empty when none answered)."""
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 - no remote control on this transport
        return {}
    out: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for q in queues or []:
            out.setdefault(q.get("name", "?"), []).append(worker)
    return out
