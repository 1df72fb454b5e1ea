"""Bearer API keys: verified against the hashed key table, remembered briefly in process."""

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


class AuthError(SluiceError):
    """No key, a wrong key, or a key without the rights the endpoint needs."""

    code = "invalid_api_key"

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status
        if status == 403:
            self.code = "operator_key_required"


def bearer_or_api_key(headers: Any) -> str:
    """The key a request carries: ``Authorization: Bearer`` first, else ``x-api-key``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return str(token.strip())
    return str(headers.get("x-api-key", "").strip())


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

    async def principal(self, request: Request, *, operator: bool = False) -> KeyInfo:
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
