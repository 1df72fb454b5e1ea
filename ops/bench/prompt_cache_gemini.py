"""Gemini rows of ``ops.bench.prompt_cache``: implicit, explicit with storage, and the rule.

The same static prompt is sent through the real Gemini adapter (google-genai SDK) against the
stand-in at a fixed interval on a hand-driven clock (one request every second, minute or ten
minutes of simulated time), three ways: implicit caching only; an explicit cache always
(created on the first request, renewed, its storage billed per token-hour); and the worker's
rule (``models.domain.context_cache``) deciding from the reuse it observes in Redis. The static
prefix's steady-state cost per request (cache reads, uncached tokens, and for explicit caches
the storage that accrues between two requests) is compared with the same tokens uncached.
"""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.request import parse_request
from workers.providers.gemini_cache import Period, storage_amount

_M = Decimal(1_000_000)
#: Simulated seconds between two requests, and how many requests each run sends.
INTERVALS = {"1 s": (1.0, 600), "1 min": (60.0, 240), "10 min": (600.0, 48)}
MODES = ("implicit", "explicit", "rule")


class _Books:
    """Storage billed in memory: what the ledger would hold."""

    def __init__(self) -> None:
        self.storage = Decimal(0)
        self.created = Decimal(0)
        #: Seconds a cache existed (periods billed, less the unused rest credited).
        self.lived = Decimal(0)

    def hold(self, period: Period) -> Period:
        return period

    def book(self, period: Period, hold: Any) -> None:
        amount = storage_amount(period)
        self.lived += Decimal(str(period.seconds))
        if period.kind == "create":
            creation = period.tokens * period.model.price.input / _M
            self.created += creation
            amount -= creation
        self.storage += amount

    def drop(self, hold: Any) -> None:
        pass


def _static_cost(read: int, static: int, model: ModelSpec) -> Decimal:
    """What the static prefix's tokens cost in one request: the read part cached."""
    read = min(read, static)
    return (read * model.price.cache_read + (static - read) * model.price.input) / _M


def run_one(model: ModelSpec, system: str, interval: float, n: int, mode: str,
            redis_url: str) -> dict[str, Any]:
    """One run: ``n`` requests ``interval`` simulated seconds apart; figures per request."""
    import redis

    from workers.providers.gemini import GeminiProvider
    from workers.providers.gemini_cache import ExplicitCaches
    from workers.providers.shaping import static_tokens
    from workers.providers.base import ProviderCall
    from workers.providers.standin import ManualClock, StandIn, StandInConfig

    clock = ManualClock(start=time.time())
    books = _Books()
    with StandIn(StandInConfig(clock=clock)) as server:
        prov = GeminiProvider(api_key="bench", base_url=server.gemini_base_url)
        client = redis.Redis.from_url(redis_url)
        prefix = f"sgbench{uuid.uuid4().hex[:8]}:"
        caches = ExplicitCaches(client, prov.client, books, _catalogue(model), ttl_s=3600.0,
                                key_prefix=prefix, clock=clock)
        if mode == "explicit":
            caches.rule = lambda *a, **k: True  # always cache, never call it cold
        costs: list[Decimal] = []
        static, explicit_at = 0, None
        try:
            for i in range(n):
                req = parse_request({"team": "web", "feature": "ui-components",
                                     "max_tokens": 20, "model": model.name,
                                     "static": {"system": system},
                                     "messages": [{"role": "user", "content":
                                                   f"Build a pricing card, variant {i}."}]})
                static = static_tokens(req.static)
                name = "" if mode == "implicit" else caches.for_request(req, model)
                if name and explicit_at is None:
                    explicit_at = i
                reply = prov.complete(ProviderCall(request=req, model=model,
                                                   cached_content=name))
                if not name and mode != "implicit":
                    caches.note_implicit(req, model, reply.usage.cache_read)
                costs.append(_static_cost(reply.usage.cache_read, static, model))
                clock.advance(interval)
            caches.cold_after_s, caches.rule = 0.0, lambda *a, **k: False
            caches.sweep()  # delete what is left: storage is billed for its real life only
        finally:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
            client.close()
            prov.close()
        # Storage accrues while a cache lives: at steady state, its rate times the interval.
        storage_rate = books.storage / books.lived if books.lived else Decimal(0)
        uncached = static * model.price.input / _M
        half = costs[n // 2:]
        steady = sum(half) / len(half) + storage_rate * Decimal(str(interval))
        total = sum(costs) + books.storage + books.created
        return {"model": model.name, "mode": mode, "static_tokens": static,
                "steady_vs_uncached": steady / uncached,
                "run_vs_uncached": total / (uncached * n),
                "explicit_from": explicit_at,
                "storage_share": (storage_rate * Decimal(str(interval))) / steady if steady
                else Decimal(0)}


def _catalogue(model: ModelSpec) -> Any:
    from models.domain.catalogue import Catalogue

    return Catalogue(version="bench", models={model.name: model})


def rows(models: list[ModelSpec], system: str, scale: float = 1.0) -> list[dict[str, Any]]:
    """Every (model, interval, mode) row; ``scale`` shortens the runs (at least 8 requests)."""
    redis_url = os.environ.get("SLUICE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    out = []
    for model in models:
        for label, (interval, n) in INTERVALS.items():
            for mode in MODES:
                row = run_one(model, system, interval, max(8, int(n * scale)), mode, redis_url)
                out.append({**row, "interval": label})
    return out
