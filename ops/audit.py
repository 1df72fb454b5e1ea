"""Record operator actions (who, when, what, why) in the audit table; the CLI commands call it."""

from __future__ import annotations

import getpass
import os
from typing import Any

from models.domain.errors import ConfigError


def default_actor() -> str:
    """Who is acting when ``--actor`` is not given: ``SLUICE_ACTOR``, else the OS user."""
    explicit = os.environ.get("SLUICE_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers): still say something
        return f"uid:{os.getuid()}"


def record(action: str, *, target: str = "", reason: str = "", actor: str | None = None,
           detail: dict[str, Any] | None = None, url: str | None = None,
           session: Any = None) -> int:
    """Append one action to the audit table; returns its id.

    With ``session`` the row joins the caller's transaction (the caller commits, so the change
    and its audit row land together); otherwise it is written and committed on its own.
    """
    from models.db.audit import record_action

    who = (actor or default_actor()).strip()
    if not who:
        raise ConfigError("an audited action needs an actor: pass --actor or set SLUICE_ACTOR")
    if session is not None:
        return record_action(session, actor=who, action=action, target=target, reason=reason,
                             detail=detail)
    from models.db.engine import make_engine, session_factory
    from models.domain.settings import load_settings

    engine = make_engine(url or load_settings().database.url)
    try:
        with session_factory(engine)() as s:
            rid = record_action(s, actor=who, action=action, target=target, reason=reason,
                                detail=detail)
            s.commit()
            return rid
    finally:
        engine.dispose()
