"""Build each side's levers (router, response cache, budgets, pauses, ledger sink) from settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.db.engine import make_engine, session_factory
from models.domain.settings import Settings


def ledger_sessions(settings: Settings) -> sessionmaker[Session]:
    """A session factory for the ledger database named in ``settings``."""
    db = settings.database
    return session_factory(make_engine(db.url, pool_size=db.pool_size, echo=db.echo))


def producer_levers(settings: Settings, sessions: sessionmaker[Session] | None = None
                    ) -> dict[str, Any]:
    """Keyword arguments for :class:`queues.producer.Gateway`: every lever configured."""
    sessions = sessions or ledger_sessions(settings)
    levers: dict[str, Any] = {"scorer": _router(settings, sessions), "sessions": sessions}
    cache = _response_cache(settings)
    if cache is not None:
        cache.moves = levers["scorer"].moves
        levers["cache"] = cache
        from queues.cache_hits import CacheHitRecorder

        levers["cache_hit_sink"] = CacheHitRecorder(settings, sessions)
    levers.update(_budgets(settings, sessions))
    levers["inflight"] = _inflight(settings)
    levers["cancels"] = _cancels(settings)
    levers["ladders"] = _ladders(settings)
    levers["limiter"] = _limiter(settings, sessions)
    return levers


def _ladders(settings: Settings) -> Any:
    """Per-feature model ladders: the settings' and the ladders file's, re-read as it changes."""
    from scheduler.router.ladder_book import LadderBook

    return LadderBook.from_settings(settings.routing)


def worker_levers(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Levers a worker needs after the provider call: settle budgets, fill the response cache."""
    levers: dict[str, Any] = {}
    cache = _response_cache(settings)
    if cache is not None:
        cache.moves = _moves(settings, sessions)  # stores under the key producers look up
        levers["cache"] = cache
    admission = _budgets(settings, sessions).get("admission")
    if admission is not None:
        levers["admission"] = admission
    levers["inflight"] = _inflight(settings)
    levers["cancels"] = _cancels(settings)
    from queues.token_stream import token_client_for

    levers["tokens"] = token_client_for(settings.broker.state_url() or settings.broker.url)
    levers["limiter"] = _limiter(settings, sessions)
    return levers


def _limiter(settings: Settings, sessions: sessionmaker[Session]) -> Any:
    from scheduler.ratelimit import build_rate_limiter

    return build_rate_limiter(settings, sessions)


def _cancels(settings: Settings) -> Any:
    from queues.cancel import cancel_marks_for

    return cancel_marks_for(settings)


def _inflight(settings: Settings) -> Any:
    from queues.inflight import inflight_for

    return inflight_for(settings.broker.url, settings.broker.key_prefix)


def _router(settings: Settings, sessions: sessionmaker[Session] | None = None) -> Any:
    """Every feature's routing policy and router, loaded now rather than on a first request;
    with the quality floor's moves when a feature has a floor."""
    from scheduler.router.policy import RoutingPolicy, policy_from_dict
    from scheduler.router.registry import RouterSet

    r = settings.routing
    default = RoutingPolicy(router=r.default_router, artifact=r.router_artifact,
                            threshold=r.cheap_threshold)
    moves = None if sessions is None else _moves(settings, sessions)
    routers = RouterSet([policy_from_dict(p) for p in r.policies], default=default, moves=moves)
    routers.warm()
    return routers


def _moves(settings: Settings, sessions: sessionmaker[Session]) -> Any:
    """The quality floor's routing moves when a feature has a floor, else None."""
    if not any(g.floor is not None for g in settings.quality.features.values()):
        return None
    from scheduler.quality_floor import MoveBook

    return MoveBook(sessions)


def _response_cache(settings: Settings) -> Any:
    if not settings.cache.enabled:
        return None
    try:
        from queues.response_cache import build_response_cache
    except ImportError:  # lever not installed in this build
        return None
    return build_response_cache(settings)


def _budgets(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    try:
        from scheduler.admission import build_admission
        from scheduler.governor import build_pause_book
    except ImportError:  # lever not installed in this build
        return {}
    return {"admission": build_admission(settings, sessions),
            "pauses": build_pause_book(settings, sessions)}
