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


_NAME = r"[A-Za-z0-9._:\-/]{1,64}"


@keys_app.command()
def create(
    team: Annotated[str, typer.Option(help="The team this key bills.")],
    org: Annotated[str, typer.Option(help="The team's org.")] = "default",
    feature: Annotated[Optional[str], typer.Option(
        help="Bind the key: the feature billed when a request names none, and the only one it "
             "may bill besides --allow-feature (without it, x-sluice-feature may name any).")
    ] = None,
    allow_feature: Annotated[Optional[list[str]], typer.Option(
        "--allow-feature", help="Another feature the key may bill (repeatable).")] = None,
    allow_user: Annotated[Optional[list[str]], typer.Option(
        "--allow-user", help="A user the key may bill (repeatable; without it, any user).")
    ] = None,
    operator: Annotated[bool, typer.Option(help="May call /admin endpoints too, in its org.")
                        ] = False,
    all_orgs: Annotated[bool, typer.Option(
        "--all-orgs", help="An operator key acting in every org, not only its own.")] = False,
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

    named = [("team", team), ("org", org)] + ([("feature", feature)] if feature else [])
    named += [("allow-feature", f) for f in allow_feature or []]
    named += [("allow-user", u) for u in allow_user or []]
    for what, value in named:
        if not re.fullmatch(_NAME, value):
            raise typer.BadParameter(f"{what} must be 1-64 letters, digits or ._:-/")
    if allow_feature and not feature:
        raise typer.BadParameter("name the key's default feature with --feature to bind it "
                                 "to features", param_hint="--allow-feature")
    if all_orgs and not operator:
        raise typer.BadParameter("only an operator key acts in every org: add --operator",
                                 param_hint="--all-orgs")
    with _session(url) as s:
        token, info = create_key(s, team=team, org=org, name=name,
                                 role="operator" if operator else "team", feature=feature,
                                 allow_features=allow_feature or (), allow_users=allow_user,
                                 all_orgs=all_orgs)
        from ops.audit import record

        # The key id only: the secret is shown once to the caller and stored nowhere.
        record("keys.create", target=info.id, reason=reason, actor=actor, session=s,
               detail={"team": team, "org": org, "role": info.role, "name": name,
                       "features": list(info.features) if info.features else None,
                       "users": list(info.users) if info.users else None,
                       "all_orgs": info.all_orgs})
        s.commit()
    if as_json:
        typer.echo(json.dumps({"id": info.id, "key": token, "team": team, "org": org,
                               "role": info.role, "feature": info.feature,
                               "features": list(info.features) if info.features else None,
                               "users": list(info.users) if info.users else None,
                               "all_orgs": info.all_orgs}))
    else:
        typer.echo(f"key {info.id} for team {org}/{team} ({info.role}, {_bills(info)}); shown "
                   "once, keep it safe:")
        typer.echo(token)


def _bills(info: Any) -> str:
    """What a key may bill, for people."""
    features = ("any feature (x-sluice-feature chooses; bind it with --feature)"
                if info.features is None else "features " + ",".join(info.features))
    users = "any user" if info.users is None else "users " + ",".join(info.users)
    where = "every org" if info.all_orgs else f"org {info.org}"
    return f"bills {features}, {users}" + (f"; acts in {where}" if info.is_operator else "")


@keys_app.command("list")
def list_(
    team: Annotated[Optional[str], typer.Option(help="Only this team.")] = None,
    org: Annotated[Optional[str], typer.Option(help="Only this org.")] = None,
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
) -> None:
    """List keys (ids, teams, roles, what they may bill; never secrets)."""
    from models.db.api_keys import info_of, list_keys

    with _session(url) as s:
        for row in list_keys(s, team, org=org):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "live"
            typer.echo(f"{row.id}  {row.org}/{row.team}  {row.role:8}  {state:18}  {row.name}  "
                       f"({_bills(info_of(row))})")


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
