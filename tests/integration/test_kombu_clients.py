"""kombu's Redis channel reuses one synchronous client per pool instead of one per command."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from queues.kombu_clients import install

pytestmark = pytest.mark.integration


def test_one_client_per_channel_and_pool_and_messages_still_flow(redis_db_url: str) -> None:
    install()
    install()  # idempotent: the second call must not wrap the wrapper
    with Connection(redis_db_url, transport_options={"global_keyprefix": "sgkc:"}) as conn:
        channel: Any = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first  # BRPOP keeps its own
        queue = conn.SimpleQueue("sgkc-q")
        try:
            for i in range(3):
                queue.put({"n": i})
            got = [queue.get(timeout=5) for _ in range(3)]
            for m in got:
                m.ack()
            assert [m.payload["n"] for m in got] == [0, 1, 2]
        finally:
            queue.clear()
            queue.close()
        channel._pool = None  # what a reconnect does: the next client uses the new pool
        rebuilt = channel._create_client()
        assert rebuilt is not first and rebuilt.connection_pool is channel.pool


def test_a_channel_closed_with_its_broker_gone_raises_what_close_ignores() -> None:
    """The state the broker-restart soak hit: Redis gone with a message unacked, and the
    transport's connection already dropped when the channel closes. kombu restores the
    message through a new client built from that connection: an AttributeError, which ended
    the worker. Now a connection error, which close() ignores; the message stays in Redis's
    unacked hash, for the visibility timeout to bring back."""
    from ops.bench.brokers import AofRedis

    install()
    redis = AofRedis()
    redis.start()
    try:
        conn = Connection(redis.url)
        queue = conn.SimpleQueue("sgkc-crash")
        queue.put({"n": 1})
        held = queue.get(timeout=5)  # delivered, never acked
        assert held.payload == {"n": 1}
        redis.kill9()
        conn.default_channel.connection.client = None  # as after the consumer's connection loss
        conn.release()  # raised AttributeError ('NoneType' object has no attribute 'hostname')
        redis.start()
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)
        assert client.hlen("unacked") == 1, "the unacked message was lost with the broker"
    finally:
        redis.close()
