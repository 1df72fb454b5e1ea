"""Reuse one Redis client per kombu channel, and survive a broker restart with messages unacked.

kombu's Redis channel builds a fresh ``redis.Redis`` for every publish, ack, unacked record and
event (``Channel._create_client``). The client is a thin handle on the channel's connection
pool, but building it fills its response-callback tables: about a tenth of a worker's CPU per
request, measured with py-spy under load. A synchronous ``redis.Redis`` is thread-safe (each
command or pipeline takes its own pooled connection), so one per channel and pool serves every
caller. The asynchronous (BRPOP) client is left alone: it holds a connection of its own.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()
_ORIGINAL: Any = None


def install() -> None:
    """Make kombu's Redis channels cache their synchronous client (idempotent)."""
    global _ORIGINAL
    with _LOCK:
        if _ORIGINAL is not None:
            return
        try:
            from kombu.transport import redis as kombu_redis
        except ImportError:  # no redis-py: no Redis transport to speed up
            return
        _ORIGINAL = kombu_redis.Channel._create_client

        def create_client(self: Any, asynchronous: bool = False) -> Any:
            if asynchronous:
                return _ORIGINAL(self, asynchronous=True)
            if self._closing and self._pool is None:
                # A broker gone while messages were unacked: kombu's close() drops the pools,
                # then restores those messages through a new client, whose address comes from a
                # connection already gone. The AttributeError killed the worker ("Unrecoverable
                # error", seen in the broker-restart soak); a connection error is what close()
                # ignores, so the worker reconnects. The messages stay in Redis's unacked
                # hash, restored after their visibility timeout.
                from redis.exceptions import ConnectionError as RedisConnectionError

                raise RedisConnectionError("kombu channel closed with its broker gone")
            pool = self.pool
            cached = self.__dict__.get("_sluice_client")
            # A reconnect gives the channel a new pool: build a client on that one.
            if cached is None or cached.connection_pool is not pool:
                cached = _ORIGINAL(self)
                self.__dict__["_sluice_client"] = cached
            return cached

        kombu_redis.Channel._create_client = create_client
