"""The gpu lane end to end: producer → Redis → a real Celery GPU worker hosting vLLM → ledger."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from tests.gpu_support import ensure_tiny_model, require_vllm, run_dir
from tests.services import run_token

pytestmark = [pytest.mark.integration, pytest.mark.gpu]
ROOT = Path(__file__).resolve().parents[2]
CAT = load_catalogue()


@pytest.fixture(scope="module")
def gpu_worker(integration_env: dict[str, str], tmp_path_factory: Any
               ) -> Iterator[subprocess.Popen[bytes]]:
    """One `celery worker -P threads -Q interactive.gpu,async.gpu` hosting the tiny model."""
    require_vllm()
    model = ensure_tiny_model()
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("gpu-worker") / "worker.log"
    env = {**integration_env, "SLUICE_GPU__MODEL_PATH": str(model),
           "SLUICE_GPU__MAX_NUM_SEQS": "32",
           "SLUICE_GPU__KV_CACHE_MEMORY_BYTES": str(256 * 1024 * 1024),
           "VLLM_LOGGING_LEVEL": "WARNING", "SLUICE_HOME": str(run_dir("gpu-lane"))}
    # The engine loads before the worker says ready; stopping it takes vLLM a while too.
    with celery_worker(env, log, queues="interactive.gpu,async.gpu", concurrency=64,
                       name=f"gpu-{run_token()}", ready_timeout=400, stop_timeout=90) as proc:
        yield proc


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def req(text: str, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"request_id": f"g-{uuid.uuid4().hex}", "team": "bulk",
                            "feature": "tagging", "model": "self-hosted", "max_tokens": 16,
                            "cache": {"mode": "bypass"},
                            "messages": [{"role": "user", "content": text}]}
    data.update(kw)
    return data


def test_self_hosted_request_is_served_and_priced_by_the_gpu_pool(
        gpu_worker: Any, gateway: Any, sessions: Any) -> None:
    result = gateway.complete(req("Tag this product: oak desk"), timeout=180)
    tiny = CAT.get("sluice-tiny-llama")
    assert result.provider == "vllm" and result.model == tiny.name
    assert result.route.queue == "interactive.gpu"
    assert result.usage.output > 0 and result.cost == cost_of(result.usage, tiny) > 0
    with sessions() as s:
        row = ledger.get(s, result.request_id)
    assert row is not None and row.backend == "gpu" and row.cost == result.cost


def test_shared_static_prefix_is_reused_and_the_ledger_shows_it(
        gpu_worker: Any, gateway: Any, sessions: Any) -> None:
    system = "You tag products for a catalogue. " + " ".join(
        f"Tag rule {i}: use lowercase nouns." for i in range(60))
    gateway.complete(req("Tag: red kettle", static={"system": system}), timeout=180)
    second = gateway.complete(req("Tag: blue mug", static={"system": system}), timeout=180)
    assert second.usage.cache_read >= 128  # vLLM's prefix cache reused whole blocks
    with sessions() as s:
        row = ledger.get(s, second.request_id)
    assert row is not None and row.cache_read == second.usage.cache_read


def test_async_gpu_requests_are_batched_and_all_complete(gpu_worker: Any, gateway: Any) -> None:
    handles = [gateway.submit(req(f"Tag item {i}", lane="async")) for i in range(12)]
    results = [h.result(timeout=240) for h in handles]
    assert all(r.route.queue == "async.gpu" and r.usage.output > 0 for r in results)
