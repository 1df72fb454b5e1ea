"""RabbitMQ: a worker ``kill -9``-ed mid-run loses nothing with no sweeper at all, because the
broker requeues a dead consumer's unacknowledged messages itself."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.domain.settings import load_settings
from queues.producer import connect
from tests.chaos.support import kill9, ledger_counts, start_worker, stop

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
N = 60


def test_kill_minus_9_on_rabbitmq_needs_no_sweeper(chaos_env: dict[str, str],
                                                   rabbitmq_vhost_url: str, chaos_sessions: Any,
                                                   tmp_path: Path) -> None:
    env = {**chaos_env, "SLUICE_BROKER__URL": rabbitmq_vhost_url}
    prefix = f"amqpkill-{uuid.uuid4().hex[:8]}-"
    log = tmp_path / "worker.log"
    first = start_worker(env, log)
    second = None
    gateway = connect(load_settings(dict(env)), admission=None)
    try:
        assert gateway.inflight is None  # nothing for a sweeper to read
        handles = [gateway.submit({
            "request_id": f"{prefix}{i}", "team": "amqp-chaos", "feature": "chaos",
            "lane": "interactive" if i % 2 else "async", "model": "cheap", "max_tokens": 16,
            "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Rephrase item {i}"}]}) for i in range(N)]
        deadline = time.time() + 120
        while ledger_counts(chaos_sessions, prefix).get("ok", 0) < N // 3:
            assert time.time() < deadline, "the first worker made no progress"
            time.sleep(0.05)
        kill9(first)  # mid-run: some tasks running, some prefetched, most still queued
        second = start_worker(env, log)
        results = [h.result(timeout=90) for h in handles]
    finally:
        gateway.close()
        stop(first)
        if second is not None:
            stop(second)
    assert len({r.request_id for r in results}) == N and all(r.text for r in results)
    # A run killed after answering but before billing is taken over once its claim lapses.
    settle_by = time.time() + 60
    while ledger_counts(chaos_sessions, prefix).get("running", 0) and time.time() < settle_by:
        time.sleep(0.2)
    assert ledger_counts(chaos_sessions, prefix) == {"ok": N}
