"""A worker holding known fake provider keys, and a producer for it, on their own key prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import run_token

ROOT = Path(__file__).resolve().parents[2]
#: Shaped like real keys, so the shape-based redaction would catch them too; the tests search
#: for the exact strings, and for their distinctive middle part.
FAKE_OPENAI = "sk-proj-FAKEopenaiKEY0123456789abcdefSECRETXYZ"
FAKE_ANTHROPIC = "sk-ant-api03-FAKEanthropicKEY0123456789SECRETQRS"
MARKERS = ("FAKEopenaiKEY0123456789", "FAKEanthropicKEY0123456789")
#: The one feature whose prompt text the secret worker keeps.
TEXT_FEATURE = "support-faq"


@pytest.fixture(scope="module")
def secret_env(integration_env: dict[str, str]) -> dict[str, str]:
    """The integration environment plus fake keys, opt-in text storage and a prefix of its own."""
    prefix = f"sgsec{run_token()}:"
    return {**integration_env,
            "SLUICE_BROKER__KEY_PREFIX": prefix, "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
            "SLUICE_TEST_KEY_PREFIX": prefix,
            "SLUICE_PROVIDERS__OPENAI_API_KEY": FAKE_OPENAI,
            "SLUICE_PROVIDERS__ANTHROPIC_API_KEY": FAKE_ANTHROPIC,
            "SLUICE_PROVIDERS__MAX_ATTEMPTS": "1",
            "SLUICE_PRIVACY__STORE_TEXT_FEATURES": f'["{TEXT_FEATURE}"]',
            "SLUICE_PRIVACY__RETENTION_DAYS": "7"}


@pytest.fixture(scope="module")
def secret_worker(secret_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Path]:
    """A real Celery worker process with the fake keys; yields the path of its log file."""
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("secret-worker") / "worker.log"
    with celery_worker(secret_env, log, queues="interactive.api,async.api", concurrency=4,
                       name=f"sec-{run_token()}", loglevel="DEBUG"):
        yield log


@pytest.fixture(scope="module")
def secret_settings(secret_env: dict[str, str]) -> Any:
    """Settings equal to the secret worker's."""
    from models.domain.settings import load_settings

    return load_settings(dict(secret_env))


@pytest.fixture(scope="module")
def secret_gateway(secret_settings: Any, secret_worker: Path) -> Iterator[Any]:
    """A producer Gateway talking to the secret worker."""
    from queues.producer import connect

    gw = connect(secret_settings)
    yield gw
    gw.close()
