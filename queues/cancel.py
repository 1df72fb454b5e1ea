"""Cancel marks: a caller cancels a queued request, and the worker that reaches it drops it.

A mark is one Redis key on the broker, named by the request's task id (its request id scoped
to its tenant, so no team can cancel another's), set by the front door (``DELETE
/v1/jobs/{id}``) or :meth:`queues.producer.Gateway.cancel`. The worker reads it for async-lane
requests only, just after claiming the request and before any provider call: a request that
already started runs to the end (and is billed), one that had not is never sent, costs $0 and
gives its budget reservation back. Interactive callers cancel by hanging up; their deadline
does the rest.
"""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings


#: How long a mark lives at least: an async request may wait in its queue with no deadline
#: (queue_timeout_s 0), and a mark that expired first would let a cancelled job be paid for.
MIN_TTL_S = 7 * 86_400


def cancel_key(key_prefix: str, task_id: str) -> str:
    """The key whose presence cancels the request of ``task_id``."""
    return f"{key_prefix}sluice:cancel:{task_id}"


class CancelMarks:
    """Set and read cancel marks (blocking Redis calls)."""

    def __init__(self, client: Any, key_prefix: str, ttl_s: int = MIN_TTL_S) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = max(int(ttl_s), MIN_TTL_S)

    def mark(self, task_id: str) -> None:
        """Cancel the request of ``task_id`` unless a worker started it (raises the client's
        errors)."""
        self.client.set(cancel_key(self.key_prefix, task_id), b"1", ex=self.ttl_s)

    def marked(self, task_id: str) -> bool:
        """Was the request of ``task_id`` cancelled? (raises the client's errors)"""
        return bool(self.client.exists(cancel_key(self.key_prefix, task_id)))


def cancel_marks_for(settings: Settings) -> CancelMarks | None:
    """Marks on ``settings``' state Redis (the broker's or the result store's; None without
    one: jobs cannot be cancelled)."""
    url = settings.broker.state_url() or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return CancelMarks(redis.Redis.from_url(url, socket_timeout=2), settings.broker.key_prefix,
                       settings.broker.result_expires)
