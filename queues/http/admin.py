"""Operator endpoints: mint, list and revoke API keys; health. Every one needs an operator key,
and acts in that key's org only unless the key was minted deployment-wide (``all_orgs``); the
key endpoints also take a team admin key, acting on its own team only."""

from __future__ import annotations

import functools
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.db.api_keys import (ROLES, ApiKeyRow, apply_policy, create_key, info_of,
                                list_keys, revoke_key)
from models.db.audit import record_action
from models.db.key_policy import policy_json, set_key_budget
from models.domain.errors import ValidationError
from queues.http.auth import AuthError, acting_org
from queues.http.pipeline import door, guarded, read_json
from queues.http.context import FrontDoor
from queues.http.admin_policy import (POLICY_FIELDS, admin_scope, check_admin_limits,
                                     read_policy)
from queues.http.errors import error_response

#: The same rule ChatRequest applies to team and org names.
_NAME = re.compile(r"^[A-Za-z0-9._:\-/]{1,64}$")


#: Control characters (NUL above all: PostgreSQL text cannot hold it) are refused everywhere.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Key ids are hex (models.db.api_keys.create_key).
_KEY_ID = re.compile(r"^[0-9a-f]{1,64}$")


def _text(body: dict[str, Any], field: str, default: str | None, pattern: re.Pattern[str] | None,
          max_len: int = 64) -> str:
    value = body.get(field, default)
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)) \
            or len(value) > max_len:
        raise ValidationError(f"{field} must be a string of 1-{max_len} letters, digits or "
                              "._:-/", field=field)
    if _CONTROL.search(value):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    return value


def key_json(row: ApiKeyRow) -> dict[str, Any]:
    """A key's public description (its secret is never stored, so never shown)."""
    info = info_of(row)
    return {**policy_json(info), "created_at": row.created_at.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


_FIELDS = {"team", "org", "role", "name", "feature", "allow_features", "allow_users",
           "all_orgs"} | POLICY_FIELDS


def _names(body: dict[str, Any], field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise ValidationError(f"{field} must be a list of names (at most 100)", field=field)
    return [_text({field: v}, field, None, _NAME) for v in value]


@guarded
async def create_key_endpoint(request: Request) -> Response:
    """``POST /admin/keys`` ``{team, org?, role?, name?, feature?, allow_features?,
    allow_users?, all_orgs?}``: the key is in the answer, once. An operator key mints keys of
    its own org only (the default), unless it acts in every org."""
    fd = door(request)
    me = await fd.keys.principal(request, operator="admin")
    body = await read_json(request)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    team = _text(body, "team", me.team if me.role == "admin" else None, _NAME)
    org = _text(body, "org", me.org, _NAME)
    org = org if me.role == "admin" else acting_org(me, org)
    role = _text(body, "role", "team", None)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    name = _text(body, "name", "", None, max_len=100)
    feature = None if body.get("feature") is None else _text(body, "feature", None, _NAME)
    features, users = _names(body, "allow_features"), _names(body, "allow_users")
    if features and feature is None:
        raise ValidationError("name the key's default feature to bind it to features",
                              field="feature")
    all_orgs = body.get("all_orgs", False)
    if not isinstance(all_orgs, bool) or (all_orgs and role != "operator"):
        raise ValidationError("all_orgs is true or false, and only for an operator key",
                              field="all_orgs")
    if all_orgs and not me.all_orgs:
        raise AuthError("only a deployment-wide operator key mints another one", status=403,
                        code="org_not_allowed", param="all_orgs")
    admin_scope(me, team, org, role, all_orgs)
    policy, budget = read_policy(body)
    token, info = await run_in_threadpool(functools.partial(
        _mint, fd, me, policy, budget, team=team, org=org, role=role, name=name,
        feature=feature, allow_features=features or (), allow_users=users, all_orgs=all_orgs))
    return JSONResponse({**policy_json(info), "key": token}, status_code=201)


def _mint(fd: FrontDoor, me: Any, policy: dict[str, Any], budget: Any, **fields: Any) -> Any:
    with fd.sessions() as s:
        check_admin_limits(s, me, policy, budget)
        try:
            token, info = create_key(s, **fields)
            row = s.get(ApiKeyRow, info.id)
            assert row is not None
            apply_policy(row, **policy)
            info = info_of(row)
            if budget is not None:
                set_key_budget(s, info, budget)
        except ValueError as exc:
            raise ValidationError(str(exc), field="body") from None
        record_action(s, actor=f"key:{me.id}", action="keys.create", target=info.id,
                      detail={**policy_json(info), "budget": None if budget is None else
                              {"hard": str(budget.hard), "window": budget.window}})
        s.commit()
    return token, info


@guarded
async def list_keys_endpoint(request: Request) -> Response:
    """``GET /admin/keys[?team=T][&org=O]``: the keys of the operator key's org (of every
    org, or of ``org``, for a deployment-wide operator key)."""
    fd = door(request)
    me = await fd.keys.principal(request, operator="admin")
    team = request.query_params.get("team")
    if team is not None:
        team = _text({"team": team}, "team", None, _NAME)
    asked = request.query_params.get("org")
    if me.role == "admin":
        admin_scope(me, team or me.team, asked or me.org, "team", False)
        team, org = me.team, me.org
    else:
        org = None if me.all_orgs and asked is None else acting_org(me, asked)

    def read() -> list[dict[str, Any]]:
        with fd.sessions() as s:
            return [key_json(r) for r in list_keys(s, team, org=org)]

    return JSONResponse({"object": "list", "data": await run_in_threadpool(read)})


@guarded
async def revoke_key_endpoint(request: Request) -> Response:
    """``DELETE /admin/keys/{key_id}``: the key (of the operator's org) stops working at once
    in this process."""
    fd = door(request)
    me = await fd.keys.principal(request, operator="admin")
    key_id = request.path_params["key_id"]
    if not _KEY_ID.match(key_id):
        # Never a key: answer as for a revoked or unknown one, without asking the database.
        return error_response(404, f"no live key {key_id!r}", param="key_id", code="key_not_found")

    def revoke() -> bool:
        with fd.sessions() as s:
            # Another org's key is "not found", as an unknown one: its id tells nothing.
            row = s.get(ApiKeyRow, key_id)
            if me.role == "admin" and (row is None or row.team != me.team):
                return False  # another team's key is "not found" to a team admin
            done = revoke_key(s, key_id, org=None if me.all_orgs else me.org)
            if done:
                record_action(s, actor=f"key:{me.id}", action="keys.revoke", target=key_id)
            s.commit()
        return done

    if not await run_in_threadpool(revoke):
        return error_response(404, f"no live key {key_id!r}", param="key_id", code="key_not_found")
    # Other front-door processes honour the revocation when their memo expires (30 s).
    fd.keys.forget()
    return JSONResponse({"id": key_id, "revoked": True})


@guarded
async def health(request: Request) -> Response:
    """``GET /admin/health``: ledger and broker reachable?"""
    fd = door(request)
    await fd.keys.principal(request, operator=True)
    parts = await run_in_threadpool(fd.health)
    ok = all(v == "ok" for v in parts.values())
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", **parts}
    if fd.shedder is not None:  # this process's load shedding: a low limit means overload
        body["shedding"] = fd.shedder.state().as_json()
    return JSONResponse(body, status_code=200 if ok else 503)
