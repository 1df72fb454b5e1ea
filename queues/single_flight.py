"""Single-flight for cache misses: the first identical miss calls the provider, the rest wait.

The first miss takes a lock on the entry's key (Redis ``SET NX PX``) and goes on to the queue;
the store that writes the entry also deletes the lock. Later identical misses see the lock and
poll for the entry for a bounded time, then proceed on their own: a leader that failed costs its
followers at most that wait, never an error. A leader refused before the queue (routing, budget,
broker) can ``abandon`` its lock, which frees it only if it still holds it.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class SingleFlight(ABC):
    """Lock, wait and release around one cache key."""

    @abstractmethod
    def acquire(self, lock: str, ttl_ms: int, owner: str = "1") -> bool:
        """True for the first caller (the leader) until released or ``ttl_ms`` passes."""

    @abstractmethod
    def wait(self, entry: str, lock: str, timeout_s: float) -> bytes | None:
        """The entry's value once the leader stored it; None when the lock goes or time is up."""

    @abstractmethod
    def release(self, lock: str) -> None:
        """Let waiters go (the entry was stored, or will not be)."""

    @abstractmethod
    def abandon(self, lock: str, owner: str) -> bool:
        """Release ``lock`` only if ``owner`` holds it (its request never reached the queue)."""


# Compare-and-delete: a leader that gave up must not free a lock a later leader took.
_ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisSingleFlight(SingleFlight):
    """Across every producer process: the lock and the entry live in the same Redis."""

    #: First poll after this many seconds, growing to ``max_poll_s``.
    first_poll_s = 0.002
    max_poll_s = 0.025

    def __init__(self, client: Any) -> None:
        self.client = client
        self._abandon = client.register_script(_ABANDON)

    def acquire(self, lock: str, ttl_ms: int, owner: str = "1") -> bool:
        return bool(self.client.set(lock, owner, nx=True, px=max(int(ttl_ms), 1)))

    def wait(self, entry: str, lock: str, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        pause = self.first_poll_s
        while True:
            # One round trip per poll; the store script sets the entry and drops the lock
            # atomically, so "no entry and no lock" means the leader will not store one.
            pipe = self.client.pipeline(transaction=False)
            pipe.get(entry)
            pipe.exists(lock)
            value, locked = pipe.execute()
            if value is not None or not locked:
                return value  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, self.max_poll_s)

    def release(self, lock: str) -> None:
        self.client.delete(lock)

    def abandon(self, lock: str, owner: str) -> bool:
        return bool(self._abandon(keys=[lock], args=[owner]))


class MemorySingleFlight(SingleFlight):
    """Within one process (the embedded default): an Event per key in flight."""

    def __init__(self, get: Callable[[str], bytes | None]) -> None:
        self._get = get
        self._flights: dict[str, tuple[float, threading.Event, str]] = {}
        self._lock = threading.Lock()

    def acquire(self, lock: str, ttl_ms: int, owner: str = "1") -> bool:
        now = time.monotonic()
        with self._lock:
            held = self._flights.get(lock)
            if held is not None and held[0] > now:
                return False
            self._flights[lock] = (now + ttl_ms / 1000.0, threading.Event(), owner)
            return True

    def wait(self, entry: str, lock: str, timeout_s: float) -> bytes | None:
        with self._lock:
            held = self._flights.get(lock)
        if held is not None:
            held[1].wait(max(0.0, min(timeout_s, held[0] - time.monotonic())))
        return self._get(entry)

    def release(self, lock: str) -> None:
        with self._lock:
            held = self._flights.pop(lock, None)
        if held is not None:
            held[1].set()

    def abandon(self, lock: str, owner: str) -> bool:
        with self._lock:
            held = self._flights.get(lock)
            if held is None or held[2] != owner:
                return False
            del self._flights[lock]
        held[1].set()
        return True
