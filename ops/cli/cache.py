"""``sluice cache``: explain a request's key, hit rate and savings per feature, flush a scope."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ops.cli.render import money, pct, print_json

cache_app = typer.Typer(help="The response cache: explain keys, hit rates and savings, flush.",
                        no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True)


def explain_request(cache: Any, request: Any, *, probe: bool = False) -> dict[str, Any]:
    """What the cache does with ``request``: policy, normalized text, patterns fired, key."""
    from models.domain.normalize import NormalizationReport

    policy = cache.policies.get(request.feature)
    report = NormalizationReport()
    key = cache.key(request, policy, report)
    ok, reason = policy.cacheable(request)
    norm = policy.normalizer
    out: dict[str, Any] = {
        "feature": request.feature, "mode": request.cache.mode, "cacheable": ok,
        "reason": reason, "reads": policy.readable(request), "writes": policy.writable(request),
        "ttl_s": policy.ttl_s, "scope": policy.policy.scope, "scope_key": key.scope,
        "normalization": policy.fingerprint, **report.as_dict(),
        "normalized": {
            "system": norm(request.static.system),
            "few_shot": [{"role": m.role, "content": norm(m.content)}
                         for m in request.static.few_shot],
            "messages": [{"role": m.role, "content": norm(m.content)} for m in request.messages]},
        "params": params_used(request),
        "digest": key.digest, "key": cache.entry_key(key),
        "semantic": policy.policy.semantic}
    if probe:
        out["stored"] = cache.peek(request) is not None
    return out


def params_used(request: Any) -> dict[str, Any]:
    """The generation parameters the request sets: those in the key with their values, those
    left out with why (models/domain/cache_key.py DECLARED), and its images by hash."""
    from models.domain.cache_key import DECLARED, Role, keyed_params
    from models.domain.request import LATE_FIELDS, ChatRequest

    roles = DECLARED[ChatRequest]
    keyed: dict[str, Any] = {"temperature": request.temperature,
                             "max_tokens": request.max_tokens, "stop": list(request.stop),
                             "response_format": request.response_format,
                             **keyed_params(request)}
    ignored = {name: roles[name][1] for name in LATE_FIELDS
               if roles[name][0] is not Role.KEYED and getattr(request, name) not in (None, False)}
    images = [{"sha256": i.sha256, "detail": i.detail} for m in request.messages
              for i in m.images]
    return {"keyed": keyed, "not_keyed": ignored, "images": images}


@cache_app.command()
def explain(
    source: Annotated[str, typer.Argument(help="Request JSON file, or - for stdin.")] = "-",
    probe: Annotated[bool, typer.Option(help="Also ask the store whether an entry exists.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the normalized form, the patterns that fired and the key of a request."""
    from models.domain.errors import SluiceError
    from models.domain.request import parse_request
    from models.domain.settings import load_settings
    from queues.response_cache import build_response_cache

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        request = parse_request(json.loads(text))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        err_console.print(f"[red]cannot read a request from {source}: {exc}[/]")
        raise typer.Exit(2) from None
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    cache = build_response_cache(load_settings())
    if cache is None:
        err_console.print("[yellow]the response cache is disabled (SLUICE_CACHE__ENABLED)[/]")
        raise typer.Exit(1)
    out = explain_request(cache, request, probe=probe)
    if as_json:
        print_json(console, out)
        return
    console.print(f"feature [bold]{out['feature']}[/] mode {out['mode']}: "
                  f"{'cacheable' if out['cacheable'] else 'not cacheable'} ({out['reason']}), "
                  f"ttl {out['ttl_s']} s, scope {out['scope']} → {out['scope_key']}")
    console.print(f"normalization: {out['normalization']}")
    console.print(f"patterns fired: {out['patterns'] or 'none'}; steps: {out['steps'] or 'none'}")
    normalized = out["normalized"]
    if normalized["system"]:
        console.print(f"[dim]system:[/] {escape(repr(normalized['system']))}")
    for m in normalized["few_shot"] + normalized["messages"]:
        console.print(f"[dim]{m['role']}:[/] {escape(repr(m['content']))}")
    params = out["params"]
    console.print(escape("keyed params: " + ", ".join(f"{k}={json.dumps(v)}"
                                                       for k, v in params["keyed"].items())),
                  highlight=False)
    if params["not_keyed"]:
        console.print(escape("not keyed: " + "; ".join(
            f"{k} ({why})" for k, why in params["not_keyed"].items())), highlight=False)
    for image in params["images"]:
        console.print(f"image: sha256 {image['sha256'][:16]}… detail {image['detail']}",
                      highlight=False)
    console.print(f"key: [bold]{out['key']}[/]")
    if probe:
        console.print("stored: " + ("yes" if out["stored"] else "no"))


def cache_stats_rows(lines: list[Any]) -> list[dict[str, Any]]:
    """Per-feature hit rate and savings from ledger SpendLines grouped by (org, feature,
    outcome): each org's feature apart (feature names are each org's own), named
    ``org/feature`` unless the org is the default one."""
    from models.domain.budget import qualified

    by: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        org, feature, outcome = line.key
        name = qualified(org, feature)
        row = by.setdefault((org, feature), {"org": org, "feature": name, "requests": 0,
                                             "hits": 0, "saved": Decimal(0),
                                             "paid": Decimal(0), "paid_n": 0})
        if outcome == "cache_hit":
            row["hits"] += line.requests
            row["saved"] += line.saved
            row["requests"] += line.requests
        elif outcome == "ok":
            row["paid"] += line.cost
            row["paid_n"] += line.requests
            row["requests"] += line.requests
    out = []
    for row in sorted(by.values(), key=lambda r: (-r["saved"], r["feature"])):
        mean = row["paid"] / row["paid_n"] if row["paid_n"] else Decimal(0)
        out.append({"org": row["org"], "feature": row["feature"], "requests": row["requests"],
                    "hits": row["hits"],
                    "hit_rate": row["hits"] / row["requests"] if row["requests"] else 0.0,
                    # Against the no-lever baseline (flagship, no cache), as `sluice spend`.
                    "saved_vs_baseline": row["saved"],
                    # What the hits would have cost at this feature's own mean paid price.
                    "avoided_spend": mean * row["hits"]})
    return out


@cache_app.command()
def stats(
    since_hours: Annotated[Optional[float], typer.Option(help="Only the last N hours.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Hit rate and savings per feature, from the ledger (rows with outcome cache_hit)."""
    from dataclasses import replace

    from models.db import embedding_stats, spend
    from models.db.engine import make_engine, session_factory
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings

    since = (datetime.now(timezone.utc) - timedelta(hours=since_hours)
             if since_hours is not None else None)
    engine = make_engine(load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            # Chat rows only here: embedding items have a table of their own below.
            lines = [replace(line, key=line.key[:3])
                     for line in spend.spend_by(s, "org", "feature", "outcome", "kind",
                                                since=since, team=team)
                     if line.key[3] == "chat"]
            items = embedding_stats.by_feature(s, since=since, team=team)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    rows = cache_stats_rows(lines)
    if as_json:
        print_json(console, [dict(r, hit_rate=round(float(r["hit_rate"]), 4),
                                  saved_vs_baseline=str(r["saved_vs_baseline"]),
                                  avoided_spend=str(r["avoided_spend"])) for r in rows]
                   + [{"kind": "embedding", **i.as_json()} for i in items])
        return
    table = Table(title="Response cache by feature", title_justify="left")
    for col in ("feature", "requests", "hits", "hit rate", "saved vs baseline", "avoided spend"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for r in rows:
        table.add_row(r["feature"], str(r["requests"]), str(r["hits"]),
                      pct(Decimal(r["hits"]), Decimal(r["requests"])),
                      money(r["saved_vs_baseline"]), money(r["avoided_spend"]))
    console.print(table)
    if items:
        console.print(embedding_stats_table(items))


def embedding_stats_table(items: list[Any]) -> Table:
    """The per-item embedding cache by feature: items, hits, hit rate, saved."""
    table = Table(title="Embedding item cache by feature", title_justify="left")
    for col in ("feature", "items", "cached", "hit rate", "tokens saved", "saved"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for i in items:
        table.add_row(i.feature, str(i.items), str(i.cached), pct(Decimal(i.cached),
                                                                  Decimal(i.items)),
                      str(i.tokens_saved), money(i.saved))
    return table


@cache_app.command()
def flush(
    org: Annotated[Optional[str], typer.Option(help="Only this org (default: any).")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team.")] = None,
    feature: Annotated[Optional[str], typer.Option(help="Only entries scoped to this feature.")]
    = None,
    user: Annotated[Optional[str], typer.Option(help="Only entries scoped to this user.")] = None,
    all_scopes: Annotated[bool, typer.Option("--all", help="Every scope.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Delete cached answers of a scope (entries shared team-wide match --team, not --feature)."""
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from queues.response_cache import build_response_cache

    if not (all_scopes or org or team or feature or user):
        err_console.print("[red]name a scope (--org, --team, --feature, --user) or pass --all[/]")
        raise typer.Exit(2)
    settings = load_settings()
    cache = build_response_cache(settings)
    if cache is None:
        err_console.print("[yellow]the response cache is disabled; nothing to flush[/]")
        raise typer.Exit(1)
    if cache.backend == "memory":
        err_console.print("[yellow]no SLUICE_CACHE__REDIS_URL: the in-process cache lives in "
                          "each service's memory and ends with it[/]")
        raise typer.Exit(1)
    try:
        removed = cache.flush(org=org, team=team, feature=feature, user=user)
    except SluiceError as err:
        err_console.print(f"[red]{err.message}[/]")
        raise typer.Exit(2) from None
    except cache.transient as exc:
        where = str(settings.cache.redis_url).split("@")[-1]  # never echo credentials
        err_console.print(f"[red]the cache store at {where} did not answer: {exc}[/]")
        raise typer.Exit(1) from None
    from ops.audit import record

    scope = {"org": org, "team": team, "feature": feature, "user": user, "all": all_scopes}
    record("cache.flush", target=",".join(f"{k}={v}" for k, v in scope.items() if v),
           reason=reason, actor=actor, detail={**scope, "removed": removed})
    console.print(f"flushed {removed} entries")
