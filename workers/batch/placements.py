"""Where each batched request went (provider batch id, custom id), so a redelivery never pays twice.

A worker killed while its requests wait in a provider batch leaves them paid for but unanswered.
Celery redelivers the tasks; without this record the next worker would put them into a new
batch and the provider would bill them a second time. With it, the next worker polls the
batch the first one submitted and takes the answers from there.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from queues.batch_wait import PLACEMENT_TTL_S, placement_prefix

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Placement:
    """One request's place in a submitted provider batch."""

    provider: str
    model: str
    batch_id: str
    custom_id: str
    #: Requests in the batch (0: unknown, a record of an older release): once as many of its
    #: callers have cancelled, the batch itself is cancelled at the provider.
    size: int = 0


class Placements(Protocol):
    """A store of placements keyed by task id (the tenant-scoped request id)."""

    def get(self, key: str) -> Placement | None:
        """The placement recorded for ``key``, if any."""
        ...

    def put(self, placed: dict[str, Placement]) -> None:
        """Record ``placed`` (one call per submitted batch)."""
        ...

    def cancel(self, placed: Placement) -> int:
        """Note that the caller of ``placed`` cancelled; how many of its batch's have."""
        ...


class MemoryPlacements:
    """Placements in this process only (the embedded default: no broker to outlive it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Placement] = {}
        self._cancelled: dict[str, set[str]] = {}

    def get(self, key: str) -> Placement | None:
        with self._lock:
            return self._data.get(key)

    def put(self, placed: dict[str, Placement]) -> None:
        with self._lock:
            self._data.update(placed)

    def cancel(self, placed: Placement) -> int:
        with self._lock:
            done = self._cancelled.setdefault(placed.batch_id, set())
            done.add(placed.custom_id)
            return len(done)


class RedisPlacements:
    """Placements in Redis beside the broker, each kept for :data:`PLACEMENT_TTL_S`."""

    def __init__(self, client: Any, prefix: str = "", ttl_s: int = PLACEMENT_TTL_S) -> None:
        self.client = client
        self.prefix = placement_prefix(prefix)
        self.cancelled_prefix = f"{prefix}sluice:batch-cancelled:"
        self.ttl_s = ttl_s

    def get(self, key: str) -> Placement | None:
        raw = self.client.get(self.prefix + key)
        return None if raw is None else Placement(**json.loads(raw))

    def put(self, placed: dict[str, Placement]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, placement in placed.items():
            pipe.set(self.prefix + key, json.dumps(asdict(placement)), ex=self.ttl_s)
        pipe.execute()

    def cancel(self, placed: Placement) -> int:
        # A set per batch: a caller cancelling twice (or a redelivery) counts once.
        key = self.cancelled_prefix + placed.batch_id
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(key, placed.custom_id)
        pipe.expire(key, self.ttl_s)
        pipe.scard(key)
        return int(pipe.execute()[-1])


def placements_for(broker_url: str, key_prefix: str) -> Placements:
    """Redis placements when the broker is Redis (redeliveries happen there), else in memory."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        return RedisPlacements(redis.Redis.from_url(broker_url, socket_timeout=5), key_prefix)
    return MemoryPlacements()
