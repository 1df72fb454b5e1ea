"""Session fixtures: the stand-in provider, a throwaway PostgreSQL database, Redis, a worker."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import need, postgres_admin_url, reachable, redis_url, run_token

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def standin() -> Iterator[Any]:
    """The local OpenAI/Anthropic stand-in, on a free loopback port."""
    from workers.providers.standin import StandIn

    with StandIn() as server:
        yield server


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head, dropped afterwards."""
    admin = postgres_admin_url()
    if not reachable(admin, 5432):
        need("PostgreSQL", f"nothing listens at {admin.split('@')[-1]}")
    import psycopg

    name = f"sluice_test_{run_token()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    from ops.db import upgrade

    upgrade(url)
    from tests import billed

    billed.DATABASES.append(url)
    billed.install()  # answers arrive before their rows are billed: tests read them after
    yield url
    billed.DATABASES.remove(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_base() -> str:
    """The Redis server URL (no db), or a skip / CI failure."""
    url = redis_url()
    if not reachable(url, 6379):
        need("Redis", f"nothing listens at {url}")
    return url


@pytest.fixture(scope="session")
def redis_db_url(redis_base: str) -> str:
    """A Redis database number no other concurrent run is likely to use."""
    db = 1 + os.getpid() % 15
    return f"{redis_base.rstrip('/')}/{db}"


@pytest.fixture(scope="session")
def integration_env(pg_url: str, redis_db_url: str, standin: Any, tmp_path_factory: Any
                    ) -> dict[str, str]:
    """Environment for a worker process: real broker, result store, ledger and stand-in."""
    prefix = f"sgtest{run_token()}:"
    home = tmp_path_factory.mktemp("sluice-home")
    return {
        "SLUICE_BROKER__URL": redis_db_url,
        "SLUICE_BROKER__RESULT_BACKEND": redis_db_url,
        "SLUICE_BROKER__KEY_PREFIX": prefix,
        "SLUICE_DATABASE__URL": pg_url,
        "SLUICE_CACHE__REDIS_URL": redis_db_url,
        "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
        "SLUICE_PROVIDERS__OPENAI_BASE_URL": standin.openai_base_url,
        "SLUICE_PROVIDERS__ANTHROPIC_BASE_URL": standin.anthropic_base_url,
        "SLUICE_PROVIDERS__GOOGLE_BASE_URL": standin.gemini_base_url,
        "SLUICE_PROVIDERS__BACKOFF_BASE_S": "0.01",
        # `auto` per feature (tests/e2e/test_frontdoor_embeddings.py); others get the default.
        "SLUICE_EMBEDDINGS__FEATURES": '{"emb-large": "text-embedding-3-large", '
                                       '"emb-gemini": "gemini-embedding-001"}',
        # The one feature that keeps text (and so stored responses, tests/e2e/test_responses*).
        "SLUICE_PRIVACY__STORE_TEXT_FEATURES": '["responses-kept"]',
        "SLUICE_HOME": str(home),
        "SLUICE_TEST_KEY_PREFIX": prefix,
    }


@pytest.fixture(scope="session")
def integration_settings(integration_env: dict[str, str]) -> Any:
    """Settings equal to what the worker process reads from ``integration_env``."""
    from models.domain.settings import load_settings

    return load_settings(dict(integration_env))


@pytest.fixture(scope="session")
def celery_worker_proc(integration_env: dict[str, str], tmp_path_factory: Any
                       ) -> Iterator[subprocess.Popen[bytes]]:
    """One real Celery worker process for the session, consuming the api queues."""
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker(integration_env, log, queues="interactive.api,async.api",
                       name=f"test-{run_token()}") as proc:
        proc.log_path = log  # type: ignore[attr-defined]  # read by log-privacy tests
        yield proc


@pytest.fixture(scope="session")
def gateway(integration_settings: Any, celery_worker_proc: Any) -> Iterator[Any]:
    """A producer Gateway wired like an app service's, against the session worker."""
    from queues.producer import connect

    gw = connect(integration_settings)
    yield gw
    gw.close()


@pytest.fixture(scope="session")
def rabbitmq_vhost_url() -> Iterator[str]:
    """A RabbitMQ vhost of this run's own (skip locally, fail in CI, without a broker)."""
    from tests.rabbitmq import scratch_vhost

    with scratch_vhost() as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq_env(integration_env: dict[str, str], rabbitmq_vhost_url: str) -> dict[str, str]:
    """The integration environment with RabbitMQ as the broker; Redis keeps the results (and
    the side state beside them). Short interactive leases, so a busy-claim retry (a countdown
    carried by the broker's delayed delivery) comes back in seconds."""
    return {**integration_env, "SLUICE_BROKER__URL": rabbitmq_vhost_url,
            "SLUICE_LANES__INTERACTIVE__SOFT_TIME_LIMIT_S": "4",
            "SLUICE_LANES__INTERACTIVE__TIME_LIMIT_S": "5"}


@pytest.fixture(scope="session")
def rabbitmq_gateway(rabbitmq_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    """A producer Gateway and one real Celery worker process on RabbitMQ."""
    from models.domain.settings import load_settings
    from queues.producer import connect
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("rabbit-worker") / "worker.log"
    with celery_worker(rabbitmq_env, log, queues="interactive.api,async.api",
                       name=f"test-amqp-{run_token()}"):
        gw = connect(load_settings(dict(rabbitmq_env)))
        yield gw
        gw.close()


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    """Ledger sessions for a test module (modules needing another pool size define their own)."""
    from models.db.engine import make_engine, session_factory

    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()
