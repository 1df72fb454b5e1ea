"""Find the real Redis and PostgreSQL a test run uses; skip locally, fail in CI, when missing."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(what: str, why: str) -> None:
    """Skip the test when a service is missing, except in CI where that is a failure."""
    msg = f"{what} is not available: {why}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: services must run; ops/test.sh starts them)")
    pytest.skip(msg)


def reachable(url: str, default_port: int) -> bool:
    """Whether something listens at the host:port of ``url``."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def redis_url() -> str:
    """The Redis server of this test run (SLUICE_TEST_REDIS_URL, default the local one)."""
    return os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def postgres_admin_url() -> str:
    """A PostgreSQL URL allowed to create databases (SLUICE_TEST_PG_URL)."""
    return os.environ.get("SLUICE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run_token() -> str:
    """A short token unique to this test process, for database names and key prefixes."""
    return f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
