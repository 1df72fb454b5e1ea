"""``sluice ladders show|set|rm|replay``: see and change feature ladders without a deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

ladders_app = typer.Typer(help="Per-feature model ladders: show, set (audited), replay.",
                          no_args_is_help=True)

EXIT_USAGE = 2
ReasonOpt = Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")]
ActorOpt = Annotated[Optional[str], typer.Option(
    help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    from ops.cli.main import err_console

    err_console.print(f"[red]{message}[/]")
    return typer.Exit(code)


def priced_rungs(ladder: Any, catalogue: Any, prompt_tokens: int, output_tokens: int,
                 static_tokens: int = 0) -> list[dict[str, Any]]:
    """Rungs in price order for the given expected tokens, each with its expected cost."""
    from scheduler.router.climb import expected_cost

    rows = []
    for i, rung in enumerate(ladder.rungs):
        model = catalogue.models.get(rung.model)
        cost = (expected_cost(model, prompt_tokens, static_tokens, output_tokens)
                if model is not None else None)
        rows.append({"rung": i, "model": rung.model, "quality": rung.quality,
                     "provider": model.provider if model else "?",
                     "expected_cost": None if cost is None else format(cost, "f")})
    return sorted(rows, key=lambda r: (r["expected_cost"] is None,
                                       float(r["expected_cost"] or 0), r["rung"]))


def default_ladder(routing: Any) -> Any:
    """The global tiers as the ladder of features that have none."""
    from scheduler.router.ladder import ladder_from_dict

    return ladder_from_dict("*", {"rungs": [routing.cheap_model, routing.flagship_model],
                                  "target": routing.cheap_threshold})


@ladders_app.command()
def show(
    feature: Annotated[Optional[str], typer.Argument(help="One feature (default: all).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Expected prompt tokens for the prices.")]
    = 1000,
    output_tokens: Annotated[int, typer.Option(help="Expected output tokens.")] = 256,
    org: Annotated[Optional[str], typer.Option(
        help="Only this org's quality-floor moves (default: every org's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each feature's ladder, its rungs in price order for the expected tokens, task types,
    and the targets the quality floor moved it to in each org."""
    from rich.table import Table

    from models.domain.catalogue import load_catalogue
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from ops.cli.main import console
    from scheduler.router.ladder_book import LadderBook

    settings = load_settings()
    try:
        catalogue = load_catalogue(settings.prices_path)
        book = LadderBook.from_settings(settings.routing).all()
    except SluiceError as err:
        raise _fail(err.message) from None
    book.setdefault("*", default_ladder(settings.routing))
    if feature is not None:
        book = {feature: book.get(feature) or book["*"]}
    moved = _moved_targets(settings, org)
    out = {f: {**lad.to_dict(), "by_price": priced_rungs(lad, catalogue, prompt_tokens,
                                                          output_tokens)}
           for f, lad in sorted(book.items())}
    for f, data in out.items():
        if f in moved:  # an org's quality-floor move wins over the target, in that org only
            data["moved_targets"] = moved[f]
    if as_json:
        console.print_json(json.dumps(out))
        return
    for name, data in out.items():
        now = "".join(f" (org {o}: moved to {t} by the quality floor: `sluice quality moves`)"
                      for o, t in sorted(data.get("moved_targets", {}).items()))
        table = Table(title=f"{name}: target {data['target']}{now}, rungs by price for "
                            f"{prompt_tokens} in / {output_tokens} out tokens")
        for col in ("rung", "model", "provider", "quality", "expected $"):
            table.add_column(col)
        for r in data["by_price"]:
            table.add_row(str(r["rung"]), r["model"], r["provider"], f"{r['quality']:.2f}",
                          r["expected_cost"] or "not in catalogue")
        console.print(table)
        for t in data.get("task_types", []):
            console.print(f"  task {t['name']}: " + json.dumps(
                {k: v for k, v in t.items() if k != "name"}, sort_keys=True))


def _moved_targets(settings: Any, org: str | None = None) -> dict[str, dict[str, float]]:
    """Per feature, each org's target as the quality floor moved it (only ``org``'s when
    named; {} when no feature has a floor or the ledger cannot be read: the configured
    ladders still show)."""
    if not any(g.floor is not None for g in settings.quality.features.values()):
        return {}
    from sqlalchemy.exc import SQLAlchemyError

    from models.db.quality import current_thresholds
    from queues.wiring import ledger_sessions

    sessions = ledger_sessions(settings)
    try:
        with sessions() as s:
            moved = current_thresholds(s)
    except SQLAlchemyError:
        return {}
    finally:
        bind = sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
    out: dict[str, dict[str, float]] = {}
    for (who, feature), target in moved.items():
        if org is None or who == org:
            out.setdefault(feature, {})[who] = target
    return out


@ladders_app.command(name="set")
def set_(
    feature: Annotated[str, typer.Argument(help="The feature ('*': every other feature).")],
    rungs: Annotated[Optional[str], typer.Option(
        help="Models, weakest first, comma-separated (keeps the task types).")] = None,
    target: Annotated[Optional[float], typer.Option(help="The quality target in [0, 1].")]
    = None,
    task_type: Annotated[Optional[str], typer.Option(
        help="With --target: set this task type's target instead of the feature's.")] = None,
    from_file: Annotated[Optional[Path], typer.Option(
        "--from-file", help="A JSON file with the whole ladder (rungs, task types, ...).")]
    = None,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
) -> None:
    """Write the feature's ladder to the ladders file (running producers re-read it)."""
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from ops.audit import record
    from ops.cli.main import console
    from scheduler.router.ladder import ladder_from_dict
    from scheduler.router.ladder_book import read_ladders, write_ladders

    settings = load_settings()
    path = settings.routing.ladders_path
    if path is None:
        raise _fail("no ladders file: set SLUICE_ROUTING__LADDERS_PATH (the same for the "
                    "front door, the workers and this command) to a writable JSON file")
    try:
        current = read_ladders(path) if Path(path).exists() else {}
        old = current.get(feature)
        data: dict[str, Any] = old.to_dict() if old is not None else {}
        if from_file is not None:
            data = json.loads(from_file.read_text("utf-8"))
        if rungs is not None:
            data["rungs"] = [r.strip() for r in rungs.split(",") if r.strip()]
        ladder = ladder_from_dict(feature, data)
        if target is not None:
            ladder = ladder.with_target(target, task_type)
        _check_models(ladder, settings)
        record("ladders.set", target=feature, reason=reason, actor=actor,
               detail={"before": old.to_dict() if old else None, "after": ladder.to_dict()})
        write_ladders(path, {**current, feature: ladder})
    except (SluiceError, ValueError, OSError) as err:
        raise _fail(getattr(err, "message", str(err))) from None
    console.print(f"ladder of {feature}: " + " < ".join(r.model for r in ladder.rungs)
                  + f", target {ladder.target} (written to {path})")


@ladders_app.command()
def rm(
    feature: Annotated[str, typer.Argument(help="The feature whose ladder goes.")],
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
) -> None:
    """Remove a feature's ladder from the ladders file (it then uses the global tiers)."""
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from ops.audit import record
    from ops.cli.main import console
    from scheduler.router.ladder_book import read_ladders, write_ladders

    path = load_settings().routing.ladders_path
    try:
        current = read_ladders(path) if path is not None and Path(path).exists() else {}
        if feature not in current:
            raise _fail(f"the ladders file has no ladder for {feature!r}")
        record("ladders.rm", target=feature, reason=reason, actor=actor,
               detail={"before": current[feature].to_dict()})
        write_ladders(path, {f: lad for f, lad in current.items() if f != feature})
    except SluiceError as err:
        raise _fail(err.message) from None
    console.print(f"ladder of {feature} removed")


def _check_models(ladder: Any, settings: Any) -> None:
    from models.domain.catalogue import load_catalogue
    from models.domain.errors import ConfigError

    catalogue = load_catalogue(settings.prices_path)
    missing = [m for m in ladder.models() if m not in catalogue.models]
    if missing:
        raise ConfigError(f"not in the catalogue: {', '.join(missing)}; use models of "
                          "prices.toml (SLUICE_PRICES_PATH)")


@ladders_app.command()
def replay(
    trace: Annotated[Optional[Path], typer.Argument(
        help="A JSON Lines trace with tags.label per request (default: the shipped "
             "coding-assistant trace).")] = None,
    ladder_file: Annotated[Optional[Path], typer.Option(
        "--ladder", help="The feature's ladder as JSON (default: the trace's coding ladder, "
                         "ops/traces/make_coding_trace.py).")] = None,
    feature: Annotated[str, typer.Option(help="The feature the ladder is for.")] = "coding",
    flagship: Annotated[str, typer.Option(help="The all-one-model comparison.")]
    = "claude-sonnet-4-6",
    pair: Annotated[str, typer.Option(help="cheap,flagship: the single-pair comparison "
                                           "(global tiers, auto).")]
    = "gpt-4o-mini,claude-sonnet-4-6",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N requests.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send the trace through the real pipeline (embedded worker, stand-in providers) routed by
    the ladder, all on one flagship, and by one cheap/flagship pair; print each bill with each
    task type's share and cost, read from the ledger. Exit 1 if any request failed."""
    from rich.table import Table

    from models.domain.errors import SluiceError
    from ops.cli.main import console
    from ops.replay.ladders import plans, replay_ladders, summary
    from ops.replay.trace import TraceError, load_trace
    from ops.traces.make_coding_trace import CODING_LADDER, OUT

    names = tuple(p.strip() for p in pair.split(",") if p.strip())
    if len(names) != 2:
        raise _fail("--pair takes two models: cheap,flagship")
    try:
        requests = load_trace(trace or OUT)
        ladder = (json.loads(ladder_file.read_text("utf-8")) if ladder_file else CODING_LADDER)
        bills = replay_ladders(requests[:limit] if limit else requests,
                               plans(ladder, feature, flagship, (names[0], names[1])),
                               concurrency=concurrency)
    except (TraceError, ValueError, OSError) as err:
        raise _fail(getattr(err, "message", str(err))) from None
    except SluiceError as err:
        raise _fail(err.message, 1) from None
    out = summary(bills)
    if as_json:
        console.print_json(json.dumps(out))
    else:
        table = Table(title=f"{out['requests']} requests of {trace or OUT.name}, by plan "
                            "(response cache off; cost from the ledger)")
        for col in ("plan", "cost $", "ladder saves", "task type", "share", "cost $ (share)",
                    "models"):
            table.add_column(col)
        for p in out["plans"]:
            saves = "-" if p["ladder_saves"] is None else f"{100 * float(p['ladder_saves']):.1f}%"
            table.add_row(p["label"], p["cost"][:10], saves, "", "", "", "")
            for k, v in p["by_task_type"].items():
                models = ", ".join(f"{m} {n}" for m, n in sorted(v["models"].items()))
                table.add_row("", "", "", k, f"{100 * v['share']:.0f}%",
                              f"{v['cost'][:10]} ({100 * v['cost_share']:.0f}%)", models)
        console.print(table)
    if any(p["failed"] for p in out["plans"]):
        raise typer.Exit(1)
