"""Entry point for ``celery -A queues.celery_app``: the app is built on first access."""

from __future__ import annotations

from typing import Any

_APP: Any = None


def __getattr__(name: str) -> Any:
    # PEP 562: Celery's `-A queues.celery_app` looks up `.app`; building it here, on access,
    # keeps importing this module free of work (no settings read, no connections).
    if name in ("app", "celery"):
        return _app()
    raise AttributeError(name)


def _app() -> Any:
    global _APP
    if _APP is None:
        from models.domain.settings import load_settings
        from queues.app import create_app

        _APP = create_app(load_settings())
        _APP.set_default()
    return _APP
