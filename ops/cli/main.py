"""``sluice``: run the demo, migrate the ledger, start workers and the stand-in, read spend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ops.cli.render import levers_table, print_json, spend_json, spend_table

app = typer.Typer(help="sluicegate admin CLI: a cost-aware LLM inference layer.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
# Tables are wide; when output is not a terminal (pipes, CI logs) do not wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def _mount_subcommands() -> None:
    # Each sub-app lives in its own module; mounting happens when the CLI runs, not at import.
    from ops.cli import keys as keys_cli, serve as serve_cli

    app.command(name="serve")(serve_cli.serve)
    app.add_typer(keys_cli.keys_app, name="keys")
    from ops.cli import budget as budget_cli, queues as queues_cli

    app.add_typer(budget_cli.budget_app, name="budget")
    from ops.cli import limits as limits_cli

    app.add_typer(limits_cli.limits_app, name="limits")
    app.add_typer(queues_cli.queues_app, name="queues")
    from ops.cli import ledger_export, spend as spend_cli

    app.command(name="spend")(spend_cli.spend)
    app.add_typer(ledger_export.ledger_app, name="ledger")
    from ops.cli import replay as replay_cli

    app.command(name="replay")(replay_cli.replay)
    from ops.cli import report as report_cli

    app.command(name="report")(report_cli.report)
    from ops.cli import flower as flower_cli, metrics as metrics_cli

    app.add_typer(metrics_cli.metrics_app, name="metrics")
    app.command(name="flower", context_settings={"allow_extra_args": True,
                                                 "ignore_unknown_options": True})(
        flower_cli.flower)
    from ops.cli import cache as cache_cli

    app.add_typer(cache_cli.cache_app, name="cache")
    from ops.cli import router as router_cli

    app.add_typer(router_cli.router_app, name="router")
    from ops.cli import ladders as ladders_cli

    app.add_typer(ladders_cli.ladders_app, name="ladders")
    from ops.cli import audit as audit_cli

    app.command(name="audit")(audit_cli.audit)
    from ops.cli import quality as quality_cli

    app.add_typer(quality_cli.quality_app, name="quality")
    from ops.cli import advise as advise_cli

    app.command(name="advise")(advise_cli.advise)


@app.command()
def demo(
    requests: Annotated[int, typer.Option("--requests", "-n", help="How many requests.")] = 200,
    home: Annotated[Optional[Path], typer.Option(help="State folder (default .sluice).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run a product-description workload through the whole pipeline on embedded defaults."""
    from rich.progress import Progress

    from ops.demo import run_demo

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("requests", total=requests)
        out = run_demo(requests, home=home, progress=lambda: bar.advance(task))
    if as_json:
        print_json(console, {"sent": out.sent, "completed": out.completed, "failed": out.failed,
                             "seconds": round(out.seconds, 2), "providers": out.providers,
                             "by_feature": spend_json(out.by_feature, ["team", "feature"]),
                             "by_team": spend_json(out.by_team, ["team"]),
                             "by_model": spend_json(out.by_model, ["tier", "model"])})
    else:
        failed = f"{sum(out.failed.values())} failed" + (f" {out.failed}" if out.failed else "")
        console.print(f"[bold]sluicegate demo[/]: {out.sent} sent, {out.completed} completed, "
                      f"{failed} in {out.seconds:.1f} s")
        console.print("providers: " + ", ".join(f"{k} → {v}" for k, v in out.providers.items()))
        console.print(spend_table("Bill by feature", ["team", "feature"], out.by_feature))
        console.print(spend_table("Bill by team", ["team"], out.by_team))
        console.print(spend_table("Bill by model", ["tier", "model"], out.by_model))
        console.print(levers_table("Savings by lever", ["team", "feature"], out.by_feature))
        console.print(f"The ledger is {out.ledger_url}; explore it with:")
        # One unbroken line, so the command can be copied as it stands.
        console.print(f"  SLUICE_DATABASE__URL={out.ledger_url} {_sluice_command()} spend "
                      "--by model,day", soft_wrap=True, highlight=False)
    if out.completed != out.sent:
        raise typer.Exit(1)


@app.command()
def migrate(
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
) -> None:
    """Bring the ledger database to the newest schema (alembic upgrade head)."""
    from models.domain.settings import load_settings
    from ops.db import upgrade

    target = url or load_settings().database.url
    upgrade(target)
    console.print(f"ledger at {target.split('@')[-1]} is up to date")


@app.command()
def worker(
    lane: Annotated[str, typer.Option(help="interactive, async or all.")] = "all",
    backend: Annotated[str, typer.Option(help="api or gpu.")] = "api",
    concurrency: Annotated[int, typer.Option("-c", help="Threads.")] = 16,
) -> None:
    """Start a Celery worker for one lane/backend (threads pool; GPU workers host vLLM)."""
    from queues.names import queues_of

    queues = queues_of(backend=backend, lane=None if lane == "all" else lane)
    if not queues:
        err_console.print(f"[red]no queue for lane {lane!r} and backend {backend!r}[/]; "
                          "use --lane interactive|async|all and --backend api|gpu")
        raise typer.Exit(2)
    cmd = [sys.executable, "-m", "celery", "-A", "queues.celery_app", "worker", "-P", "threads",
           "-c", str(concurrency), "-Q", ",".join(queues), "-E", "-n",
           f"{backend}-{lane}@%h", "--loglevel", "INFO"]
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))


@app.command()
def standin(
    host: Annotated[str, typer.Option(help="Listen address (keep it on loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    latency_ms: Annotated[float, typer.Option(help="Added latency per reply.")] = 0.0,
) -> None:
    """Run the local OpenAI/Anthropic stand-in server in the foreground."""
    cmd = [sys.executable, "-m", "workers.providers.standin", "--host", host, "--port", str(port),
           "--latency-ms", str(latency_ms)]
    raise typer.Exit(subprocess.call(cmd))


def _sluice_command() -> str:
    """``sluice`` when the shell finds it, else its path in this environment (ops/demo.sh runs
    it from .venv, which a newcomer's shell has not activated)."""
    import shutil
    import sys
    from pathlib import Path

    here = Path(sys.executable).parent / "sluice"
    if shutil.which("sluice") == str(here) or not here.exists():
        return "sluice"
    return str(here)


def main() -> None:
    """Console-script entry point."""
    _mount_subcommands()
    app()


if __name__ == "__main__":
    main()
