"""Build the producer side's levers (router, response cache, budgets, ledger sink) from settings."""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings


def default_levers(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for :class:`queues.producer.Gateway` from ``settings``."""
    levers: dict[str, Any] = {}
    levers["scorer"] = _router(settings)
    return levers


def _router(settings: Settings) -> Any:
    try:
        from scheduler.router.registry import build_router
    except ImportError:
        return None
    return build_router("heuristic", None)
