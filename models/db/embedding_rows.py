"""Ledger rows of embedding requests (``kind = embedding``, items and input tokens)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from models.domain.embedding import EmbeddingRequest
from models.domain.result import Route, Timings


def embedding_row(request: EmbeddingRequest, route: Route, *, outcome: str, items: int,
                  tokens: int = 0, cost: Decimal = Decimal(0),
                  baseline_cost: Decimal = Decimal(0), list_cost: Decimal = Decimal(0),
                  price_version: str = "", timings: Timings | None = None, batch: bool = False,
                  request_id: str | None = None, error_code: str | None = None,
                  now: datetime | None = None) -> dict[str, Any]:
    """The ledger row (column values) of an embedding request, or of its cached part."""
    t = timings or Timings()
    return {
        "request_id": request_id or request.request_id,
        "created_at": now or datetime.now(timezone.utc),
        "org": request.org, "team": request.team, "feature": request.feature,
        "user": request.user, "lane": request.lane,
        "tier": route.tier, "provider": route.provider, "model": route.model,
        "backend": route.backend, "route_reason": route.reason[:200], "route_score": None,
        "outcome": outcome, "error_code": error_code, "cache_hit": outcome == "cache_hit",
        "batch": batch, "input_uncached": tokens, "cache_read": 0, "cache_write_5m": 0,
        "cache_write_1h": 0, "output": 0, "reasoning": 0,
        "cost": cost, "baseline_cost": baseline_cost, "list_cost": list_cost,
        "price_version": price_version, "latency_ms": t.total_ms, "queued_ms": t.queued_ms,
        "provider_ms": t.provider_ms, "prompt_hash": "", "kind": "embedding", "items": items,
    }


#: How the row id of a request's cached part ends (:func:`cached_part_id`).
CACHED_PART_SUFFIX = ":cached"


def cached_part_id(request_id: str) -> str:
    """The row id of a request's items answered from the item cache (its own row, so hits
    count as cache hits and the sent part keeps the request's id)."""
    return f"{request_id[:120]}{CACHED_PART_SUFFIX}"
