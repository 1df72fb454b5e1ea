"""``sluice ledger export``: every ledger row of a window as CSV, a JSON array or JSON lines."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer

ledger_app = typer.Typer(help="Read the ledger: export rows for finance and analysis.",
                         no_args_is_help=True)


class Format(str, Enum):
    """Export formats."""

    csv = "csv"
    json = "json"
    jsonl = "jsonl"


def cell(value: Any) -> Any:
    """A JSON-safe value: money stays an exact decimal string, times are ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def row_dict(row: Any, columns: list[str]) -> dict[str, Any]:
    """One ledger row as a dict of export cells."""
    return {c: cell(getattr(row, c)) for c in columns}


def write_rows(rows: Iterable[Any], columns: list[str], fmt: Format, out: IO[str]) -> int:
    """Write ``rows`` to ``out`` in ``fmt``, streaming; returns how many were written."""
    n = 0
    if fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else v
                             for v in row_dict(row, columns).values()])
            n += 1
        return n
    if fmt is Format.jsonl:
        for row in rows:
            out.write(json.dumps(row_dict(row, columns)) + "\n")
            n += 1
        return n
    # A JSON array written element by element, so a large export never sits in memory.
    out.write("[")
    for row in rows:
        out.write((",\n" if n else "\n") + json.dumps(row_dict(row, columns)))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


@contextmanager
def _target(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        yield fh
    tmp.replace(path)  # a failed export never leaves a truncated file under the final name


@ledger_app.command("export")
def export(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="csv, json or jsonl.")
                   ] = Format.csv,
    since: Annotated[Optional[str], typer.Option(
        help="Start: 7d, 24h, 30m, 2w, today, or an ISO date/datetime (UTC).")] = None,
    until: Annotated[Optional[str], typer.Option(help="End (exclusive), same forms.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team's rows.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o",
                                                help="File to write (default stdout).")] = None,
    db: Annotated[Optional[str], typer.Option(
        help="Ledger URL (default SLUICE_DATABASE__URL).")] = None,
) -> None:
    """Export ledger rows, oldest first; money as exact decimal strings, never floats.

    Exit codes: 0 ok, 1 the ledger could not be read, 2 bad usage.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from models.db import spend
    from models.domain.errors import SluiceError
    from ops.cli.main import err_console
    from ops.cli.spend import (EXIT_FAILED, EXIT_USAGE, UsageError, describe_failure, fail,
                               ledger_session, parse_when)

    try:
        start, end = parse_when(since), parse_when(until)
    except UsageError as exc:
        raise fail(err_console, str(exc), EXIT_USAGE) from None
    if out is not None and out.is_dir():
        raise fail(err_console, f"--out {out} is a folder; give a file name such as "
                   f"{out / ('ledger.' + fmt.value)}", EXIT_USAGE)
    columns = spend.export_columns()
    try:
        with ledger_session(db) as s, _target(out) as fh:
            n = write_rows(spend.iter_rows(s, since=start, until=end, team=team), columns,
                           fmt, fh)
    except (SQLAlchemyError, SluiceError) as exc:
        raise fail(err_console, describe_failure(exc, db), EXIT_FAILED) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_FAILED) from None
    except OSError as exc:
        raise fail(err_console, f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED) \
            from None
    if out is not None:
        err_console.print(f"wrote {n} ledger rows to {out} ({fmt.value})", highlight=False)
