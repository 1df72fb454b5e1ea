"""Gemini explicit context caches (``cachedContents``): create, get, patch the TTL, delete.

Each cache remembers its prefix (tokens and digest), its model and its expiry on the stand-in's
clock, and the stand-in keeps the storage it would bill: token-seconds from creation to
deletion or expiry, so a test can hold the ledger's storage rows against the provider's bill.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.gemini_prompt import cache_prompt
from workers.providers.standin.prompt import Prompt
from workers.providers.standin.state import StandInState


@dataclass
class CachedContent:
    """One explicit cache."""

    name: str
    model: str
    key: str
    prompt: Prompt
    created: float
    expires: float
    display_name: str = ""
    #: Deleted by its owner: storage stopped at ``expires`` (set to the deletion time).
    deleted: bool = False


class GeminiCaches:
    """The stand-in's explicit caches, on its clock; storage accrues while a cache lives."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.entries: dict[str, CachedContent] = {}
        self.created = 0
        self.deleted = 0

    def live(self, name: str, key: str) -> CachedContent | None:
        """The cache ``name`` of ``key``'s project if it has not expired or been deleted."""
        entry = self.entries.get(name)
        if entry is None or entry.key != key or entry.deleted or entry.expires <= self.clock():
            return None
        return entry

    def storage_token_seconds(self) -> float:
        """What storage the provider bills: tokens times seconds each cache existed."""
        now = self.clock()
        return sum(e.prompt.total * (min(e.expires, now) - e.created)
                   for e in self.entries.values())

    def clear(self) -> None:
        """Forget every cache."""
        self.entries.clear()
        self.created = self.deleted = 0


def _ttl_seconds(body: dict[str, Any], now: float) -> float:
    ttl, expire = body.get("ttl"), body.get("expireTime") or body.get("expire_time")
    if ttl is not None:
        text = str(ttl)
        if not text.endswith("s"):
            raise RequestInvalid("ttl must be a duration in seconds such as '3600s'")
        try:
            seconds = float(text[:-1])
        except ValueError:
            raise RequestInvalid(f"ttl {ttl!r} is not a duration") from None
        if seconds <= 0:
            raise RequestInvalid("ttl must be positive")
        return seconds
    if expire is not None:
        when = datetime.fromisoformat(str(expire).replace("Z", "+00:00"))
        return when.timestamp() - datetime.now(timezone.utc).timestamp()
    return 3600.0  # the API's default TTL


def _view(entry: CachedContent, clock_now: float) -> dict[str, Any]:
    # The clock may be a hand-driven one: expiry is reported in wall time, as its offset.
    wall = datetime.now(timezone.utc).timestamp() + (entry.expires - clock_now)
    stamp = datetime.fromtimestamp(wall, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": entry.name, "model": f"models/{entry.model}", "displayName": entry.display_name,
            "createTime": stamp, "updateTime": stamp, "expireTime": stamp,
            "usageMetadata": {"totalTokenCount": entry.prompt.total}}


async def create(request: Request, state: StandInState, key: str) -> Response:
    """``POST /v1beta/cachedContents``: store the prefix; below the model's minimum, a 400."""
    body = _body(await request.body())
    # "models/x" on the Gemini API, "publishers/google/models/x" (or a full path) on Vertex.
    model = str(body.get("model", "")).rsplit("/", 1)[-1]
    spec = state.model(model, "gemini")
    if spec is None:
        raise RequestInvalid(f"models/{model} is not found for API version v1beta", status=404)
    prompt = cache_prompt(body)
    if prompt.total < spec.min_cacheable_tokens:
        raise RequestInvalid(f"Cached content is too small. total_token_count={prompt.total}, "
                             f"min_total_token_count={spec.min_cacheable_tokens}")
    caches: GeminiCaches = state.gemini_caches
    now = caches.clock()
    entry = CachedContent(name=f"cachedContents/{uuid.uuid4().hex[:16]}",
                          model=spec.api_name or spec.name, key=key, prompt=prompt, created=now,
                          expires=now + _ttl_seconds(body, now),
                          display_name=str(body.get("displayName", "")))
    caches.entries[entry.name] = entry
    caches.created += 1
    # Creating a cache processes its tokens: billed as input at the standard price.
    state.tokens["gemini_cache_created"] += prompt.total
    if state.config.gemini_cache_create_delay_s > 0:
        await asyncio.sleep(state.config.gemini_cache_create_delay_s)
    return JSONResponse(_view(entry, now))


async def get(request: Request, state: StandInState, key: str, name: str) -> Response:
    """``GET /v1beta/cachedContents/{id}``."""
    caches: GeminiCaches = state.gemini_caches
    entry = _found(caches, name, key)
    return JSONResponse(_view(entry, caches.clock()))


async def patch(request: Request, state: StandInState, key: str, name: str) -> Response:
    """``PATCH /v1beta/cachedContents/{id}``: a new TTL, counted from now."""
    caches: GeminiCaches = state.gemini_caches
    entry = _found(caches, name, key)
    now = caches.clock()
    entry.expires = now + _ttl_seconds(_body(await request.body()), now)
    return JSONResponse(_view(entry, now))


async def delete(request: Request, state: StandInState, key: str, name: str) -> Response:
    """``DELETE /v1beta/cachedContents/{id}``: storage stops accruing now."""
    caches: GeminiCaches = state.gemini_caches
    entry = _found(caches, name, key)
    entry.expires = min(entry.expires, caches.clock())
    entry.deleted = True
    caches.deleted += 1
    return JSONResponse({})


def _found(caches: GeminiCaches, name: str, key: str) -> CachedContent:
    entry = caches.live(name, key)
    if entry is None:
        raise RequestInvalid(f"CachedContent not found (or permission denied): {name}",
                             status=403)
    return entry


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise RequestInvalid("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestInvalid("the request body must be a JSON object")
    return body
