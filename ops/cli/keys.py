"""``sluice keys create / update / rotate / revoke / show / list``: front-door API keys and
their policy (budget, rate limits, allow-list, lanes, expiry), stored hashed, every change
audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Optional

import typer

from ops.cli.key_options import (BudgetHard, BudgetSoft, BudgetWindow, Expires, Lanes, Meta,
                                 Models, Rpm, Tpm, money, policy_of)

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
    admin: Annotated[bool, typer.Option(
        "--team-admin", help="A team admin: mints and manages keys of its own team only, "
                             "within the team's limits (POST /admin/keys).")] = False,
    model: Models = None, lane: Lanes = None, rpm: Rpm = None, tpm: Tpm = None,
    expires: Expires = None, meta: Meta = None, budget: BudgetHard = None,
    budget_soft: BudgetSoft = None, budget_window: BudgetWindow = "daily",
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
    if admin and operator:
        raise typer.BadParameter("a key is an operator or a team admin, not both",
                                 param_hint="--team-admin")
    policy = policy_of(model, lane, rpm, tpm, expires, meta)
    hard, soft = money(budget, "--budget"), money(budget_soft, "--budget-soft")
    with _session(url) as s:
        try:
            token, info = create_key(s, team=team, org=org, name=name,
                                     role="operator" if operator else
                                     "admin" if admin else "team", feature=feature,
                                     allow_features=allow_feature or (), allow_users=allow_user,
                                     all_orgs=all_orgs, **policy)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        _budget(s, info, hard, soft, budget_window)
        from models.db.key_policy import policy_json
        from ops.audit import record

        # The key id only: the secret is shown once to the caller and stored nowhere.
        record("keys.create", target=info.id, reason=reason, actor=actor, session=s,
               detail={**policy_json(info), "budget": _budget_detail(hard, soft, budget_window)})
        s.commit()
    if as_json:
        from models.db.key_policy import policy_json

        typer.echo(json.dumps({**policy_json(info), "key": token}))
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


def _budget(s: Any, info: Any, hard: Any, soft: Any, window: str) -> None:
    """Set the key's own budget when ``--budget`` was given."""
    if hard is None:
        if soft is not None:
            raise typer.BadParameter("a soft threshold needs --budget", param_hint="--budget")
        return
    from models.db.key_policy import KeyBudget, set_key_budget
    from models.domain.errors import ValidationError

    try:
        set_key_budget(s, info, KeyBudget(hard, soft, window))
    except ValidationError as exc:
        raise typer.BadParameter(exc.message, param_hint="--budget-window") from None


def _budget_detail(hard: Any, soft: Any, window: str) -> dict[str, Any] | None:
    return None if hard is None else {"hard": str(hard), "soft": None if soft is None
                                      else str(soft), "window": window}


@keys_app.command()
def update(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after sk-sluice-).")],
    model: Models = None, lane: Lanes = None, rpm: Rpm = None, tpm: Tpm = None,
    expires: Expires = None, meta: Meta = None, budget: BudgetHard = None,
    budget_soft: BudgetSoft = None, budget_window: BudgetWindow = "daily",
    clear: Annotated[Optional[list[str]], typer.Option(
        "--clear", help="Remove a policy field: models, lanes, rpm, tpm, expires, metadata "
                        "(repeatable).")] = None,
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Change a live key's policy; front doors apply it within 30 s (their key memo)."""
    from models.db.api_keys import update_key
    from models.db.key_policy import policy_json
    from ops.audit import record

    policy = policy_of(model, lane, rpm, tpm, expires, meta)
    names = {"models": "models", "lanes": "lanes", "rpm": "rpm", "tpm": "tpm",
             "expires": "expires_at", "metadata": "metadata"}
    for field in clear or []:
        if field not in names:
            raise typer.BadParameter(f"use one of {', '.join(names)}", param_hint="--clear")
        policy[names[field]] = None
    hard, soft = money(budget, "--budget"), money(budget_soft, "--budget-soft")
    with _session(url) as s:
        try:
            info = update_key(s, key_id, **policy)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if info is None:
            typer.echo(f"no live key {key_id}", err=True)
            raise typer.Exit(1)
        _budget(s, info, hard, soft, budget_window)
        record("keys.update", target=key_id, reason=reason, actor=actor, session=s,
               detail={"changed": sorted(policy) + (["budget"] if hard else []),
                       **policy_json(info),
                       "budget": _budget_detail(hard, soft, budget_window)})
        s.commit()
    typer.echo(f"updated {key_id}")


@keys_app.command()
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after sk-sluice-).")],
    grace: Annotated[str, typer.Option(
        help="How long the old secret keeps working (a duration: 24h, 30m, 0s).")] = "24h",
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log (`sluice audit`).")] = "",
    actor: Annotated[Optional[str], typer.Option(
        help="Who acts, for the audit log (default: SLUICE_ACTOR or the OS user).")] = None,
) -> None:
    """Give a key a new secret (printed once); the old one works for --grace more. The id,
    and with it the key's budget, limits and metrics, stay the same."""
    from datetime import datetime, timezone

    from models.db.api_keys import rotate_key
    from ops.audit import record
    from ops.cli.key_options import expiry

    now = datetime.now(timezone.utc)
    ends = expiry(grace, now)
    assert ends is not None
    with _session(url) as s:
        out = rotate_key(s, key_id, grace=ends - now, now=now)
        if out is None:
            typer.echo(f"no live key {key_id}", err=True)
            raise typer.Exit(1)
        token, _info = out
        record("keys.rotate", target=key_id, reason=reason, actor=actor, session=s,
               detail={"grace_s": (ends - now).total_seconds(),
                       "old_secret_until": ends.isoformat()})
        s.commit()
    if as_json:
        typer.echo(json.dumps({"id": key_id, "key": token,
                               "old_secret_until": ends.isoformat()}))
    else:
        typer.echo(f"key {key_id} rotated; the old secret works until {ends:%Y-%m-%d %H:%M} "
                   "UTC. The new one, shown once:")
        typer.echo(token)


@keys_app.command()
def show(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after sk-sluice-).")],
    url: Annotated[Optional[str], typer.Option(help="Database URL (default: settings).")] = None,
) -> None:
    """A key's policy, its own budgets (spent, held) and state, as JSON (never its secret)."""
    from models.db.api_keys import ApiKeyRow, info_of
    from models.db.key_policy import key_budgets, policy_json

    with _session(url) as s:
        row = s.get(ApiKeyRow, key_id)
        if row is None:
            typer.echo(f"no key {key_id}", err=True)
            raise typer.Exit(1)
        info = info_of(row)
        state = "revoked" if row.revoked_at else "expired" if info.expired() else "live"
        out = {**policy_json(info), "state": state, "budgets": key_budgets(s, info),
               "created_at": row.created_at.isoformat(),
               "old_secret_until": row.prev_until.isoformat() if row.prev_until else None}
    typer.echo(json.dumps(out, indent=2))
