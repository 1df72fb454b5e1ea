"""Cancel marks: a caller cancels a queued request, and the worker that reaches it drops it.

A mark is one Redis key on the broker, set by the front door (``DELETE /v1/jobs/{id}``) or
:meth:`queues.producer.Gateway.cancel`. The worker reads it for async-lane requests only, just
after claiming the request and before any provider call: a request that already started runs
to the end (and is billed), one that had not is never sent, costs $0 and gives its budget
reservation back. Interactive callers cancel by hanging up; their deadline does the rest.
"""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings


def cancel_key(key_prefix: str, request_id: str) -> str:
    """The key whose presence cancels ``request_id``."""
    return f"{key_prefix}sluice:cancel:{request_id}"


class CancelMarks:
    """Set and read cancel marks (blocking Redis calls)."""

    def __init__(self, client: Any, key_prefix: str, ttl_s: int) -> None:
        self.client = client
        self.key_prefix = key_prefix
        # A mark must outlive the longest queue wait (async jobs wait for hours) and no more.
        self.ttl_s = max(int(ttl_s), 60)

    def mark(self, request_id: str) -> None:
        """Cancel ``request_id`` if no worker has started it (raises the client's errors)."""
        self.client.set(cancel_key(self.key_prefix, request_id), b"1", ex=self.ttl_s)

    def marked(self, request_id: str) -> bool:
        """Was ``request_id`` cancelled? (raises the client's errors: the caller decides)"""
        return bool(self.client.exists(cancel_key(self.key_prefix, request_id)))


def cancel_marks_for(settings: Settings) -> CancelMarks | None:
    """Marks on ``settings``' Redis broker (None for other brokers: jobs cannot be cancelled)."""
    url = settings.broker.url
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    # As long as a job's record and result are kept: past that nobody can poll it anyway.
    return CancelMarks(redis.Redis.from_url(url, socket_timeout=2), settings.broker.key_prefix,
                       settings.broker.result_expires or 7 * 86400)
