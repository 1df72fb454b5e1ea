"""Redis restarted: producers get a bounded BrokerError, workers reconnect, nothing billed twice."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db.tables import LedgerRow
from models.domain.errors import BrokerError
from models.domain.settings import load_settings
from queues.producer import connect
from tests.chaos.support import free_port, redis_server, start_worker, stop

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _request(rid: str) -> dict[str, Any]:
    return {"request_id": rid, "team": "redis-chaos", "feature": "redis-restart",
            "model": "cheap", "max_tokens": 8, "cache": {"mode": "bypass"},
            "lane": "interactive" if rid[-1] in "02468" else "async",
            "messages": [{"role": "user", "content": f"hello {rid}"}]}


def test_redis_restart(chaos_env: dict[str, str], chaos_sessions: Any, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"  # our own server: the shared one is never restarted
    env = {**chaos_env, "SLUICE_BROKER__URL": url, "SLUICE_BROKER__RESULT_BACKEND": url,
           "SLUICE_CACHE__REDIS_URL": url, "SLUICE_HOME": str(tmp_path / "home")}
    prefix = f"redis-{uuid.uuid4().hex[:8]}-"
    worker = None
    gw = connect(load_settings(dict(env)), admission=None)
    try:
        with redis_server(port):
            worker = start_worker(env, tmp_path / "worker.log", concurrency=4)
            for i in range(6):
                assert gw.complete(_request(f"{prefix}a{i}"), timeout=30).text
        # Redis is down: a producer gets a typed error in bounded time, never a hang.
        t0 = time.time()
        with pytest.raises(BrokerError, match="refused the request"):
            gw.submit(_request(f"{prefix}down"))
        assert time.time() - t0 < 15, f"submit took {time.time() - t0:.1f} s"
        assert worker.poll() is None, "the worker died when Redis went away"
        with redis_server(port):
            # The worker reconnects on its own; the first sends may meet a half-open pool.
            handles = []
            for i in range(6):
                for attempt in range(5):
                    try:
                        handles.append(gw.submit(_request(f"{prefix}b{i}")))
                        break
                    except BrokerError:
                        assert attempt < 4
                        time.sleep(1)
            for h in handles:
                assert h.result(timeout=60).text
    finally:
        gw.close()
        if worker is not None:
            stop(worker)
    with chaos_sessions() as s:
        rows = s.execute(select(LedgerRow.request_id, func.count())
                         .where(LedgerRow.request_id.startswith(prefix))
                         .group_by(LedgerRow.request_id)).all()
    counts = dict(rows)
    assert f"{prefix}down" not in counts  # refused before anything was queued
    assert len(counts) == 12 and set(counts.values()) == {1}, counts
