"""Fixtures of the chaos suite: an environment with short leases, so a killed worker's work
comes back in seconds, and ledger sessions on the run's database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models.db.engine import make_engine, session_factory

#: Redis redelivers a killed worker's unacked messages after this many seconds; it outlasts
#: the lane time limits below, so a task still running is never delivered twice.
VISIBILITY_S = 8


@pytest.fixture(scope="session")
def chaos_env(integration_env: dict[str, str]) -> dict[str, str]:
    """The integration environment with short time limits, leases and redelivery."""
    return {**integration_env,
            "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "SLUICE_LANES__INTERACTIVE__SOFT_TIME_LIMIT_S": "4",
            "SLUICE_LANES__INTERACTIVE__TIME_LIMIT_S": "5",
            "SLUICE_LANES__ASYNC__SOFT_TIME_LIMIT_S": "4",
            "SLUICE_LANES__ASYNC__TIME_LIMIT_S": "5",
            "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "0"}


@pytest.fixture(scope="session")
def chaos_sessions(pg_url: str) -> Iterator[Any]:
    """Ledger sessions on the run's database."""
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()
