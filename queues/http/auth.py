"""Bearer API keys: verified against the hashed key table, remembered briefly in process; what
a key may bill (its features and users) and act on (an operator's org)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from models.db.api_keys import KeyInfo, verify_key
from models.domain.errors import SluiceError
from queues.http.wire.common import H_FEATURE, H_LANE, H_USER


class AuthError(SluiceError):
    """No key, a wrong key, or a key without the rights the request needs."""

    code = "invalid_api_key"

    def __init__(self, message: str, *, status: int = 401, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        if code is not None:
            self.code = code
        elif status == 403:
            self.code = "operator_key_required"


def bearer_or_api_key(headers: Any) -> str:
    """The key a request carries: ``Authorization: Bearer`` first, else ``x-api-key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return str(token.strip())
    return str(headers.get("x-api-key", "").strip())


def bill_as_key_allows(key: KeyInfo, data: dict[str, Any], headers: Any) -> None:
    """Set ``data``'s feature and user from what ``key`` may bill, or raise a 403 naming the
    one it may not: a header cannot move spend under another feature's or user's cap.

    ``x-sluice-feature`` wins when the key allows that feature; with no header the key's
    default feature applies. A key bound to users must name one of them (``x-sluice-user``
    or the body's ``user``) unless it is bound to exactly one, which then applies.
    """
    named = headers.get(H_FEATURE)
    feature = named or key.feature
    if not key.may_bill_feature(feature):
        allowed = ", ".join(key.features or ())
        raise AuthError(f"this key may not bill feature {feature!r} (it bills {allowed}); "
                        f"send one of those in {H_FEATURE}, or ask an operator for a key of "
                        f"that feature (`sluice keys create --team {key.team} --feature "
                        f"{feature}`)", status=403, code="feature_not_allowed", param=H_FEATURE)
    data["feature"] = feature
    user = data.get("user")
    if key.users is None:
        return
    if user is None and len(key.users) == 1:
        data["user"] = key.users[0]
        return
    if user is None or not key.may_bill_user(user):
        what = "names no user" if user is None else f"may not bill user {user!r}"
        raise AuthError(f"this request {what}: this key bills users {', '.join(key.users)} "
                        f"only; name one in {H_USER}", status=403, code="user_not_allowed",
                        param=H_USER)


def apply_key_policy(key: KeyInfo, data: dict[str, Any]) -> None:
    """Carry ``key``'s policy onto the request: its id (its own rate limits and budget apply)
    and model allow-list; a lane the key may not use is a 403 naming the header."""
    lane = data.get("lane", "interactive")
    if not key.may_use_lane(lane):
        raise AuthError(f"this key may not use the {lane} lane (it may use "
                        f"{', '.join(key.lanes or ())}); send {H_LANE}: one of those, or ask an "
                        "operator to widen the key (`sluice keys update --lane`)", status=403,
                        code="lane_not_allowed", param=H_LANE)
    data["api_key"] = key.id
    if key.models is not None:
        data["allowed_models"] = list(key.models)


def acting_org(key: KeyInfo, org: str | None) -> str:
    """The org an operator ``key`` acts on: ``org`` if given and the key may act there (a
    deployment-wide operator key, or its own org), else its own; a 403 otherwise."""
    if org is None or org == key.org:
        return key.org
    if not key.all_orgs:
        raise AuthError(f"this operator key acts in org {key.org!r} only; org {org!r} needs an "
                        "operator key of that org or a deployment-wide one (`sluice keys "
                        "create --operator --all-orgs`)", status=403, code="org_not_allowed",
                        param="org")
    return org


class KeyBook:
    """Checks keys against the database; answers repeat keys from memory for ``ttl_s``.

    Verifying costs a database round trip: at hundreds of requests per second that would be
    the front door's largest cost. A revoked key therefore keeps working for up to ``ttl_s``;
    unknown keys are remembered for a shorter time so guessing cannot flood the database.
    """

    def __init__(self, sessions: sessionmaker[Session], *, ttl_s: float = 30.0,
                 miss_ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.miss_ttl_s = miss_ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[KeyInfo | None, float]] = OrderedDict()

    def verify(self, token: str) -> KeyInfo | None:
        """The key's info, or None (blocking: call from a worker thread)."""
        with self.sessions() as s:
            return verify_key(s, token)

    async def principal(self, request: Request, *, operator: bool | str = False) -> KeyInfo:
        """Who is calling, from ``Authorization: Bearer`` or ``x-api-key`` (the anthropic
        SDK and agents send either); AuthError (401/403) otherwise."""
        token = bearer_or_api_key(request.headers)
        if not token:
            raise AuthError("You didn't provide an API key. Send it as 'Authorization: Bearer "
                            "<key>' or 'x-api-key: <key>' (the SDKs' api_key); an operator "
                            "mints keys with `sluice keys create --team <team>`.")
        # Keys are high-entropy, so a plain digest is a safe name for the memo.
        memo = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        hit = self._seen.get(memo)
        if hit is not None and hit[1] > now:
            info = hit[0]
        else:
            info = await run_in_threadpool(self.verify, token)
            self._remember(memo, info, now)
        if info is None:
            raise AuthError("Incorrect API key provided; check the key, or ask an operator for "
                            "a new one (`sluice keys create --team <team>`).")
        if info.expired():  # remembered before its expiry (or its rotation's grace) passed
            raise AuthError(f"API key {info.id} has expired; use its replacement, or ask an "
                            "operator for a new one (`sluice keys rotate` or `create`).")
        if operator == "admin" and info.role in ("admin", "operator"):
            return info
        if operator and not info.is_operator:
            raise AuthError("this endpoint needs an operator key "
                            "(`sluice keys create --team <team> --operator`)", status=403)
        return info

    def _remember(self, memo: str, info: KeyInfo | None, now: float) -> None:
        self._seen[memo] = (info, now + (self.ttl_s if info else self.miss_ttl_s))
        self._seen.move_to_end(memo)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def forget(self) -> None:
        """Drop every remembered key (after a revocation, when waiting ``ttl_s`` is too long)."""
        self._seen.clear()
