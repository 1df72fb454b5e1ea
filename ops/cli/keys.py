"""``sluice keys create / list / revoke``: API keys of the HTTP front door, stored hashed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

keys_app = typer.Typer(help="Mint, list and revoke front-door API keys (stored hashed).",
                       no_args_is_help=True)


@contextmanager
def _session(url: str | None) -> Iterator[Any]:
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings

    engine = make_engine(url or load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            yield s
    finally:
        engine.dispose()


@keys_app.command()
def create(
    team: Annotated[str, typer.Option(help="The team this key bills.")],
    org: Annotated[str, typer.Option(help="The team's org.")] = "default",
    operator: Annotated[bool, typer.Option(help="May call /admin endpoints too.")] = False,
    name: Annotated[str, typer.Option(help="A label, e.g. the service using it.")] = "",
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Mint a key; it is printed once and only its salted hash is kept."""
    import re

    from models.db.api_keys import create_key

    for what, value in (("team", team), ("org", org)):
        if not re.fullmatch(r"[A-Za-z0-9._:\-/]{1,64}", value):
            raise typer.BadParameter(f"{what} must be 1-64 letters, digits or ._:-/")
    with _session(url) as s:
        token, info = create_key(s, team=team, org=org, name=name,
                                 role="operator" if operator else "team")
        from ops.audit import record

        # The key id only: the secret is shown once to the caller and stored nowhere.
        record("keys.create", target=info.id, reason=reason, actor=actor, session=s,
               detail={"team": team, "org": org, "role": info.role, "name": name})
        s.commit()
    if as_json:
        typer.echo(json.dumps({"id": info.id, "key": token, "team": team, "org": org,
                               "role": info.role}))
    else:
        typer.echo(f"key {info.id} for team {team} ({info.role}); shown once, keep it safe:")
        typer.echo(token)


@keys_app.command("list")
def list_(
    team: Annotated[Optional[str], typer.Option(help="Only this team.")] = None,
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
) -> None:
    """List keys (ids, teams, roles; never secrets)."""
    from models.db.api_keys import list_keys

    with _session(url) as s:
        for row in list_keys(s, team):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "live"
            typer.echo(f"{row.id}  {row.org}/{row.team}  {row.role:8}  {state:18}  {row.name}")


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after sk-sluice-).")],
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Revoke a key (front doors stop accepting it within 30 s)."""
    from models.db.api_keys import revoke_key

    with _session(url) as s:
        done = revoke_key(s, key_id)
        if done:
            from ops.audit import record

            record("keys.revoke", target=key_id, reason=reason, actor=actor, session=s)
        s.commit()
    if not done:
        typer.echo(f"no live key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
