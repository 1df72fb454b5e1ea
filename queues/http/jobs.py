"""Who owns each async job (and a cache hit's answer), so only its team can poll it.

Records are named by the job's tenant-scoped task id (its request id, org and team), never by
the request id alone: two teams may pick the same id, and one's record must not replace the
other's.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Protocol

from models.domain.settings import Settings
from queues.envelope import tenant_task_id


def job_key(request_id: str, org: str, team: str) -> str:
    """The name of the job record of ``request_id`` of ``org``/``team``."""
    return tenant_task_id(request_id, org, team)


class JobBook(Protocol):
    """Job records: ``{"team", "org", "task_id", "reply"?}``, kept as long as task results."""

    async def put(self, job_id: str, record: dict[str, Any]) -> None:
        """Keep ``record`` for ``job_id``."""
        ...

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The record of ``job_id``, if any."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryJobs:
    """In-process records, for the embedded default (one process serves and polls)."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._records: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def put(self, job_id: str, record: dict[str, Any]) -> None:
        self._records[job_id] = (time.monotonic() + self.ttl_s, record)
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        found = self._records.get(job_id)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    async def close(self) -> None:
        self._records.clear()


class RedisJobs:
    """Records in Redis beside the task results, so any front-door process can answer a poll."""

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.prefix = prefix
        self.ttl_s = max(int(ttl_s), 1)

    async def put(self, job_id: str, record: dict[str, Any]) -> None:
        await self._redis.set(self.prefix + job_id, json.dumps(record), ex=self.ttl_s)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self.prefix + job_id)
        return None if raw is None else dict(json.loads(raw))

    async def close(self) -> None:
        await self._redis.aclose()


def build_jobs(settings: Settings) -> JobBook:
    """Redis when the result store is Redis, else in-process."""
    backend = settings.broker.result_backend
    ttl = settings.broker.result_expires
    if backend.startswith(("redis://", "rediss://")):
        return RedisJobs(backend, f"{settings.broker.key_prefix}sluice:job:", ttl)
    return MemoryJobs(float(ttl))
