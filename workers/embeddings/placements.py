"""Where each member of an embedding pack sent through the Batch API went, so none pays twice.

A pack is one line of one provider batch shared by several requests. A worker killed while the
batch ran left it paid for and its members' tasks unanswered; the redelivered tasks packed
their items again and the provider billed them a second time. The leader of a pack now
records each member's place (its slice of the vectors, every member's token count, for the
split) under the member's task id twice: as an intent before it submits the batch (tagged
with the pack's id, which goes into the batch's metadata; kept apart, so a cancel sees no
batch yet), then with the batch id the provider answered. A redelivered member with a place
collects its vectors from that batch instead; one with only an intent (its worker died
between the submit and the record) looks the batch up by its tag in the provider's batch
list, and collects it if the provider has it. As for chat batches
(workers/batch/placements.py) the record lives beside the broker for 25 hours.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from queues.batch_wait import PLACEMENT_TTL_S, embed_placement_prefix


@dataclass(frozen=True)
class PackPlacement:
    """One member's place in a submitted embedding batch."""

    batch_id: str
    #: Its items are ``vectors[start:start + size]`` of the pack's one line.
    start: int
    size: int
    #: Every member's own token count, in pack order, and this member's index: the provider's
    #: total is split by them exactly as the leader would have.
    tokens: tuple[int, ...]
    index: int
    #: Items in the pack's line (the reply's check), and the member's attempt row.
    items: int
    attempt_id: int
    #: The pack's tag in its batch's metadata, and when it was about to be placed (epoch s).
    #: An intent (recorded before the submit, under the key plus ``:intent``) has no batch
    #: id: a run that died before the record left a batch only the provider's list can name.
    pack: str = ""
    at: float = 0.0


class PackPlacements(Protocol):
    """Placements keyed by task id (the tenant-scoped request id)."""

    def get(self, key: str) -> PackPlacement | None:
        """The placement recorded for ``key``, if any."""
        ...

    def put(self, placed: dict[str, PackPlacement]) -> None:
        """Record the places of one pack's members."""
        ...

    def cancel(self, place: PackPlacement) -> int:
        """Note that the caller of the member at ``place`` cancelled; how many of its pack's
        members have (once all have, the pack's batch is cancelled at the provider)."""
        ...


class MemoryPackPlacements:
    """In this process only (the embedded default: no broker outlives the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, PackPlacement] = {}
        self._cancelled: dict[str, set[int]] = {}

    def get(self, key: str) -> PackPlacement | None:
        with self._lock:
            return self._data.get(key)

    def put(self, placed: dict[str, PackPlacement]) -> None:
        with self._lock:
            self._data.update(placed)

    def cancel(self, place: PackPlacement) -> int:
        with self._lock:
            done = self._cancelled.setdefault(place.batch_id, set())
            done.add(place.index)
            return len(done)


class RedisPackPlacements:
    """In Redis beside the broker, each kept for :data:`PLACEMENT_TTL_S`."""

    def __init__(self, client: Any, key_prefix: str = "") -> None:
        self.client = client
        self.prefix = embed_placement_prefix(key_prefix)
        self.cancelled_prefix = f"{key_prefix}sluice:embed-batch-cancelled:"

    def get(self, key: str) -> PackPlacement | None:
        raw = self.client.get(self.prefix + key)
        if raw is None:
            return None
        data = json.loads(raw)
        return PackPlacement(**{**data, "tokens": tuple(data["tokens"])})

    def put(self, placed: dict[str, PackPlacement]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, place in placed.items():
            pipe.set(self.prefix + key, json.dumps(asdict(place)), ex=PLACEMENT_TTL_S)
        pipe.execute()

    def cancel(self, place: PackPlacement) -> int:
        # A set of member indexes per batch: a member counted twice (a redelivery) counts once.
        key = self.cancelled_prefix + place.batch_id
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(key, place.index)
        pipe.expire(key, PLACEMENT_TTL_S)
        pipe.scard(key)
        return int(pipe.execute()[-1])


def pack_placements_for(state_url: str | None, key_prefix: str) -> PackPlacements:
    """Redis placements when there is a Redis for side state (redeliveries happen there)."""
    if state_url and state_url.startswith(("redis://", "rediss://")):
        import redis

        return RedisPackPlacements(redis.Redis.from_url(state_url, socket_timeout=5),
                                   key_prefix)
    return MemoryPackPlacements()
