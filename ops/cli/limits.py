"""``sluice limits set / list / rm``: rate limits (requests and tokens per window) on an org,
team, feature, model or provider deployment. A key's own limits: ``sluice keys``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ops.cli.keys import _session

limits_app = typer.Typer(help="Set, list and remove rate limits (requests and tokens per "
                              "minute).", no_args_is_help=True)

_SCOPE = "org, team, feature, model (a catalogue name) or deployment (<provider>/<model>)"


@limits_app.command("set")
def set_cmd(
    scope: Annotated[str, typer.Argument(help=_SCOPE)],
    key: Annotated[str, typer.Argument(help="The org, team, feature, model or deployment.")],
    rpm: Annotated[Optional[int], typer.Option(help="Requests per window.")] = None,
    tpm: Annotated[Optional[int], typer.Option(
        help="Tokens (input + output) per window.")] = None,
    window: Annotated[int, typer.Option(help="The window in seconds.")] = 60,
    org: Annotated[str, typer.Option(
        help="The org it applies in; '*' for every org (a provider deployment's own limit).")
    ] = "default",
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Create or replace a limit; admission applies it within a second."""
    from models.db.rate_limits import set_limit
    from models.domain.errors import ValidationError
    from models.domain.ratelimit import RateLimit
    from ops.audit import record

    if scope == "org" and org == "default":
        org = key
    with _session(url) as s:
        try:
            lim = set_limit(s, RateLimit(scope, key, org, rpm, tpm, window))
        except ValidationError as exc:
            raise typer.BadParameter(exc.message) from None
        record("limits.set", target=f"{org}/{lim.name}", reason=reason, actor=actor, session=s,
               detail={"org": org, "scope": scope, "key": key, "rpm": rpm, "tpm": tpm,
                       "window_s": window})
        s.commit()
    typer.echo(f"limit {org}/{lim.name}: {rpm or '-'} requests, {tpm or '-'} tokens per "
               f"{window} s")


@limits_app.command("list")
def list_(
    org: Annotated[Optional[str], typer.Option(help="Only this org's (and every org's).")
                   ] = None,
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every rate limit set with `sluice limits set`."""
    from models.db.rate_limits import list_limits

    with _session(url) as s:
        limits = list_limits(s, org)
    if as_json:
        typer.echo(json.dumps([lim.__dict__ for lim in limits]))
        return
    for lim in limits:
        typer.echo(f"{lim.org}/{lim.name}  rpm={lim.rpm or '-'}  tpm={lim.tpm or '-'}  "
                   f"window={lim.window_s}s")


@limits_app.command("rm")
def rm(
    scope: Annotated[str, typer.Argument(help=_SCOPE)],
    key: Annotated[str, typer.Argument(help="The org, team, feature, model or deployment.")],
    org: Annotated[str, typer.Option(help="The org it applies in ('*': every org).")
                   ] = "default",
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Remove a limit (every window of it)."""
    from models.db.rate_limits import remove_limit
    from ops.audit import record

    if scope == "org" and org == "default":
        org = key
    with _session(url) as s:
        n = remove_limit(s, org, scope, key)
        if n:
            record("limits.rm", target=f"{org}/{scope}:{key}", reason=reason, actor=actor,
                   session=s)
        s.commit()
    if not n:
        typer.echo(f"no limit {org}/{scope}:{key}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {org}/{scope}:{key}")
