"""Lever configurations of a replay, and how each one reshapes requests and settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from models.domain.settings import Settings


@dataclass(frozen=True)
class LeverConfig:
    """Which of the three request-path levers a replay run keeps on."""

    name: str
    label: str
    response_cache: bool
    routing: bool
    prompt_caching: bool


#: The runs of a full replay, in the order they run (all levers first, then one off at a time).
CONFIGS: tuple[LeverConfig, ...] = (
    LeverConfig("all", "all levers", True, True, True),
    LeverConfig("no-response-cache", "no response cache", False, True, True),
    LeverConfig("no-routing", "no routing (all flagship)", True, False, True),
    LeverConfig("no-prompt-caching", "no prompt caching", True, True, False),
    LeverConfig("none", "no levers (all flagship, no cache)", False, False, False),
)
BY_NAME = {c.name: c for c in CONFIGS}
#: Request fields the response-cache key leaves out (models/domain/cache_key.py DECLARED).
_NOT_KEYED = frozenset({"request_id", "user", "lane", "tags", "cache"})


def select_configs(names: str) -> list[LeverConfig]:
    """The configurations named in a comma-separated list, in the order given."""
    picked = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in picked if n not in BY_NAME]
    if unknown or not picked:
        raise ValueError(f"unknown lever configuration(s) {unknown or names!r}; use any of "
                         f"{', '.join(BY_NAME)} (comma-separated)")
    return [BY_NAME[n] for n in picked]


def run_settings(settings: Settings, config: LeverConfig, cache_prefix: str | None) -> Settings:
    """``settings`` for one run: the response cache on or off, optionally under its own prefix.

    Live runs keep the configured prefix: the running workers store answers under it, and a
    lookup under any other prefix could never hit.
    """
    update: dict[str, Any] = {"enabled": config.response_cache}
    if cache_prefix is not None:
        update["key_prefix"] = cache_prefix
    return settings.model_copy(update={"cache": settings.cache.model_copy(update=update)})


def shape_request(data: dict[str, Any], config: LeverConfig, *, salt: str, index: int,
                  tier: str | None = None) -> dict[str, Any]:
    """The trace request as this run sends it.

    ``salt`` is unique to the run: it opens the static prefix, so neither the provider's
    prompt cache nor the response cache carries anything over from an earlier run (on a live
    Redis or a real provider nothing can be reset between runs). ``tier`` pins an ``auto``
    request to the tier the router chose for the request as traced (see :func:`needs_pin`).
    """
    out = json.loads(json.dumps(data))  # a deep copy; trace requests are plain JSON
    if not config.routing:
        # Every request on the flagship, named models included: that is the no-lever baseline.
        out["model"] = "flagship"
    elif tier is not None and out.get("model", "auto") == "auto":
        out["model"] = tier
    static = dict(out.get("static") or {})
    if not config.prompt_caching:
        return _unshaped(out, static, salt, index, repeats_share=config.response_cache)
    if static.get("system"):
        static["system"] = f"[{salt}]\n{static['system']}"
        out["static"] = static
    return out


def needs_pin(data: dict[str, Any], config: LeverConfig) -> bool:
    """Whether the run must pin the route the router picks for the request as traced.

    Folding the static part into the user turn changes what a router reads (a long style
    guide in the user turn looks like hard work), so without the pin "no prompt caching"
    would also change routing, and its bill would mix two levers.
    """
    return config.routing and not config.prompt_caching and data.get("model", "auto") == "auto"


def _unshaped(out: dict[str, Any], static: dict[str, Any], salt: str, index: int, *,
              repeats_share: bool) -> dict[str, Any]:
    """No prompt-cache shaping: the static part folded into the first user turn, behind a tag.

    Folding alone is not enough: a provider that caches automatically (OpenAI) would still
    reuse a long common head of the user turn. So each prompt opens with a tag that no other
    prompt shares. With the response cache on, identical requests must stay identical (or
    the cache could never answer a repeat), so the tag hashes the request's content; with it
    off, the tag is unique per request, which is exactly the no-cache baseline. Tool
    definitions cannot become text; they stay where the API takes them.
    """
    head = [static.get("system", "")]
    head += [f"{m['role']}: {m['content']}" for m in static.get("few_shot", [])]
    if repeats_share:
        # Only what the response-cache key reads: two users asking the same thing share a tag.
        keyed = {k: v for k, v in out.items() if k not in _NOT_KEYED}
        tag = hashlib.sha256((salt + json.dumps(keyed, sort_keys=True)).encode()).hexdigest()[:16]
    else:
        tag = f"{salt}-{index}"
    messages = list(out["messages"])
    folded = "\n\n".join([f"[{tag}]", *[h for h in head if h], messages[0]["content"]])
    messages[0] = dict(messages[0], content=folded)
    out["messages"] = messages
    if static.get("tools"):
        out["static"] = {"tools": static["tools"]}
    else:
        out.pop("static", None)
    return out
