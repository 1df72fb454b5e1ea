"""``sluice replay TRACE.jsonl``: a trace's bill with each lever on and off, from the ledger."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

DEFAULT_TRACE = Path(__file__).resolve().parents[1] / "traces" / "product_descriptions.jsonl"


def replay(
    trace: Annotated[Optional[Path], typer.Argument(
        help="A JSON Lines trace (default: the shipped product-description trace).")] = None,
    levers: Annotated[str, typer.Option(
        help="Runs to make, comma-separated: all, no-response-cache, no-routing, "
             "no-prompt-caching, none.")] = "all,no-response-cache,no-routing,"
                                                "no-prompt-caching,none",
    live: Annotated[bool, typer.Option(
        "--live", help="Use the configured broker, cache and ledger (SLUICE_*) and the running "
                       "workers, instead of embedded ones.")] = False,
    home: Annotated[Path, typer.Option(
        help="Embedded state folder; its replay-ledger.db holds the rows.")] = Path(
            ".sluice/replay"),
    limit: Annotated[Optional[int], typer.Option(help="Only the first N requests.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send a trace through the real pipeline once per lever setting; print each bill.

    Every figure is read back from the ledger rows the run wrote. The reduction compares
    each run with the all-flagship bill (the measured no-lever run when it is among the
    runs). Exit codes: 0 ok, 1 requests failed or a service is missing, 2 bad usage.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    from models.domain.errors import SluiceError
    from ops.cli.main import console, err_console
    from ops.cli.spend import EXIT_FAILED, EXIT_USAGE, fail
    from ops.replay.levers import select_configs
    from ops.replay.runner import replay as run_replay
    from ops.replay.trace import TraceError, load_trace

    path = trace or DEFAULT_TRACE
    try:
        configs = select_configs(levers)
        requests = load_trace(path)
    except (ValueError, TraceError) as exc:
        raise fail(err_console, str(exc), EXIT_USAGE) from None
    if limit is not None:
        if limit < 1:
            raise fail(err_console, "--limit must be at least 1", EXIT_USAGE)
        requests = requests[:limit]
    if concurrency < 1:
        raise fail(err_console, "--concurrency must be at least 1", EXIT_USAGE)
    with Progress(TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=not err_console.is_terminal
                  ) as bar:
        def progress(config: Any, total: int) -> Any:
            task = bar.add_task(config.label, total=total)
            return lambda: bar.advance(task)

        try:
            out = run_replay(requests, configs, live=live, home=home, concurrency=concurrency,
                             progress=progress)
        except SluiceError as err:
            raise fail(err_console, err.message, EXIT_FAILED) from None
    failed = sum(sum(r.failed.values()) for r in out.runs)
    if as_json:
        from ops.cli.render import print_json

        print_json(console, outcome_json(out, path))
    else:
        console.print(bill_table(out, path))
        console.print(f"rows: request ids rp-{out.run_id}-<levers>-NNNNN in {out.ledger_url}; "
                      "baseline = the ledger's all-flagship, no-cache price of the run; cut = "
                      "1 - paid / all-flagship bill; lever worth = paid - all-levers paid",
                      highlight=False)
    if failed:
        err_console.print(f"[red]{failed} request(s) failed[/]: "
                          + "; ".join(f"{r.config.name}: {r.failed}" for r in out.runs
                                      if r.failed))
        raise typer.Exit(EXIT_FAILED)


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def bill_table(out: Any, path: Path) -> Table:
    """One row per run: requests, cache hits, flagship share, paid, the ledger's baseline,
    reduction against the all-flagship bill, and what the run paid beyond all levers on."""
    from ops.cli.render import money

    ref = out.flagship_bill()
    table = Table(title=f"Replay of {path.name}: {out.requests} requests per run "
                        f"({out.mode}); all-flagship bill {money(ref)}", title_justify="left")
    for col in ("levers", "ok", "hits", "flagship", "paid", "baseline", "cut", "lever worth",
                "secs"):
        table.add_column(col, justify="left" if col == "levers" else "right", no_wrap=True)
    best = next((r.cost for r in out.runs if r.config.name == "all"), None)
    for run in out.runs:
        t = run.total
        flagship = sum(line.requests for line in run.by_tier if line.key[0] == "flagship")
        table.add_row(run.config.label, f"{run.completed}/{run.sent}",
                      str(t.cache_hits if t else 0),
                      f"{flagship / max(run.sent, 1) * 100:.0f}%",
                      money(run.cost), money(t.baseline_cost if t else Decimal(0)),
                      _pct(out.reduction(run)),
                      "-" if best is None or run.config.name == "all"
                      else "+" + money(run.cost - best), f"{run.seconds:.1f}")
    return table


def outcome_json(out: Any, path: Path) -> dict[str, Any]:
    """The replay as JSON: money as exact decimal strings."""
    from ops.cli.render import levers_json

    runs = []
    for run in out.runs:
        reduction = out.reduction(run)
        runs.append({"levers": run.config.name, "label": run.config.label,
                     "response_cache": run.config.response_cache,
                     "routing": run.config.routing, "prompt_caching": run.config.prompt_caching,
                     "request_id_prefix": run.prefix, "sent": run.sent,
                     "completed": run.completed, "failed": run.failed,
                     "seconds": round(run.seconds, 2),
                     "requests_in_ledger": run.total.requests if run.total else 0,
                     "cache_hits": run.total.cache_hits if run.total else 0,
                     "bill": levers_json(run.total) if run.total else None,
                     "reduction_vs_all_flagship": None if reduction is None else str(reduction),
                     "by_tier": [{"tier": line.key[0], "model": line.key[1],
                                  "requests": line.requests, "cost": str(line.cost)}
                                 for line in run.by_tier]})
    return {"trace": str(path), "mode": out.mode, "run_id": out.run_id,
            "ledger": out.ledger_url, "requests_per_run": out.requests,
            "all_flagship_bill": str(out.flagship_bill()), "runs": runs}
