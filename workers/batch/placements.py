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

log = logging.getLogger(__name__)

#: How long a placement is kept: a provider batch may take up to 24 hours, plus a margin.
PLACEMENT_TTL_S = 25 * 3600


@dataclass(frozen=True)
class Placement:
    """One request's place in a submitted provider batch."""

    provider: str
    model: str
    batch_id: str
    custom_id: str


class Placements(Protocol):
    """A store of placements keyed by task id (the tenant-scoped request id)."""

    def get(self, key: str) -> Placement | None:
        """The placement recorded for ``key``, if any."""
        ...

    def put(self, placed: dict[str, Placement]) -> None:
        """Record ``placed`` (one call per submitted batch)."""
        ...


class MemoryPlacements:
    """Placements in this process only (the embedded default: no broker to outlive it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Placement] = {}

    def get(self, key: str) -> Placement | None:
        with self._lock:
            return self._data.get(key)

    def put(self, placed: dict[str, Placement]) -> None:
        with self._lock:
            self._data.update(placed)


class RedisPlacements:
    """Placements in Redis beside the broker, each kept for :data:`PLACEMENT_TTL_S`."""

    def __init__(self, client: Any, prefix: str = "", ttl_s: int = PLACEMENT_TTL_S) -> None:
        self.client = client
        self.prefix = f"{prefix}sluice:batch-placement:"
        self.ttl_s = ttl_s

    def get(self, key: str) -> Placement | None:
        raw = self.client.get(self.prefix + key)
        return None if raw is None else Placement(**json.loads(raw))

    def put(self, placed: dict[str, Placement]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, placement in placed.items():
            pipe.set(self.prefix + key, json.dumps(asdict(placement)), ex=self.ttl_s)
        pipe.execute()


def placements_for(broker_url: str, key_prefix: str) -> Placements:
    """Redis placements when the broker is Redis (redeliveries happen there), else in memory."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        return RedisPlacements(redis.Redis.from_url(broker_url, socket_timeout=5), key_prefix)
    return MemoryPlacements()
