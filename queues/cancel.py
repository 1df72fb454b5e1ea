"""Cancel marks: a caller cancels a queued request, and the worker that reaches it drops it.

A mark is one Redis key on the broker, named by the request's task id (its request id scoped
to its tenant, so no team can cancel another's), set by the front door (``DELETE
/v1/jobs/{id}``) or :meth:`queues.producer.Gateway.cancel`. The worker checks it for async-lane
requests only, just after claiming the request and before any provider call, and in the same
atomic step marks the request started: a request that already started runs to the end (and is
billed; its cancel is refused), one that had not is never sent, costs $0 and gives its budget
reservation back. Interactive callers cancel by hanging up; their deadline
does the rest.
"""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings


#: How long a mark lives at least: an async request may wait in its queue with no deadline
#: (queue_timeout_s 0), and a mark that expired first would let a cancelled job be paid for.
MIN_TTL_S = 7 * 86_400
#: How long a worker's "started" mark lives. It only has to outlast a door's gap between
#: reading the ledger (no claim yet) and setting its mark; after that the claim answers.
STARTED_TTL_S = 3_600
#: The values of the key. Any other value is a mark of the previous release (``1``): cancelled.
CANCELLED, STARTED = b"1", b"started"


def cancel_key(key_prefix: str, task_id: str) -> str:
    """The key whose value says whether the request of ``task_id`` was cancelled or started."""
    return f"{key_prefix}sluice:cancel:{task_id}"


class CancelMarks:
    """Set and read cancel marks (blocking Redis calls).

    The caller and the worker race for one key with ``SET NX``: whichever writes first decides.
    A cancel that finds the worker's mark is refused (the request runs and is billed); a worker
    that finds a cancel mark drops the request. Checking the ledger and then setting the mark
    left a gap in which a worker could start a request whose caller was told it was cancelled.
    """

    def __init__(self, client: Any, key_prefix: str, ttl_s: int = MIN_TTL_S) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_s = max(int(ttl_s), MIN_TTL_S)

    def mark(self, task_id: str) -> bool:
        """Cancel the request of ``task_id`` unless a worker started it: True when it will not
        be sent, False when it was started (raises the client's errors)."""
        key = cancel_key(self.key_prefix, task_id)
        if self.client.set(key, CANCELLED, ex=self.ttl_s, nx=True):
            return True
        return self._value(key) != STARTED

    def marked(self, task_id: str) -> bool:
        """The worker's check, just before it would call a provider: True when the request was
        cancelled; otherwise it is marked started, so a cancel from now on is refused (raises
        the client's errors)."""
        key = cancel_key(self.key_prefix, task_id)
        if self.client.set(key, STARTED, ex=STARTED_TTL_S, nx=True):
            return False
        return self._value(key) != STARTED

    def state(self, task_id: str) -> str | None:
        """``cancelled``, ``started`` or None (neither yet), without changing anything."""
        value = self.client.get(cancel_key(self.key_prefix, task_id))
        if value is None:
            return None
        return "started" if value == STARTED else "cancelled"

    def _value(self, key: str) -> bytes:
        # The key expired between the SET and this GET (hours later at the least): treat it
        # as what the caller wanted, a cancel, rather than fail.
        value = self.client.get(key)
        return CANCELLED if value is None else bytes(value)


def cancel_marks_for(settings: Settings) -> CancelMarks | None:
    """Marks on ``settings``' Redis broker (None for other brokers: jobs cannot be cancelled)."""
    url = settings.broker.url
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return CancelMarks(redis.Redis.from_url(url, socket_timeout=2), settings.broker.key_prefix,
                       settings.broker.result_expires)
