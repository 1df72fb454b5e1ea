"""Fixtures of the front-door e2e modules: one door for the session, its ledger, a team key,
and a small door that sheds past two requests in flight."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from models.db.engine import make_engine, session_factory
from tests.e2e.frontdoor_support import mint, serve_frontdoor


@pytest.fixture(scope="session")
def door(integration_settings: Any, gateway: Any) -> Iterator[str]:
    """The front door, with the session worker (started by ``gateway``) behind it."""
    with serve_frontdoor(integration_settings) as url:
        yield url


@pytest.fixture(scope="session")
def sessions(pg_url: str) -> Iterator[Any]:
    """Sessions on the ledger the door writes."""
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def team_key(pg_url: str) -> str:
    """A key of the team ``catalog``."""
    return mint(pg_url, "catalog")


@pytest.fixture(scope="session")
def client(door: str, team_key: str) -> Iterator[openai.OpenAI]:
    """The official openai SDK pointed at the door, its retries off."""
    c = openai.OpenAI(api_key=team_key, base_url=door + "/v1", max_retries=0, timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="module")
def small_door(integration_settings: Any, gateway: Any) -> Iterator[str]:
    """A front door that holds at most two interactive requests in flight (each door's
    shedding test: chat, Messages, Responses). One per module: its cap adapts to the queue
    waits it saw, so a door shared with an earlier shedding test starts at its floor (1)."""
    shedding = integration_settings.shedding.model_copy(update={"max_inflight": 2,
                                                                "min_inflight": 1})
    with serve_frontdoor(integration_settings.model_copy(update={"shedding": shedding})) as url:
        yield url
