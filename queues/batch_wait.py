"""Where a request waits in a provider batch: the key workers write and the front door reads.

A worker records each batched request's place (workers/batch/placements.py) under this key.
The door reads it to tell a job that is waiting in a provider batch (cancellable: the worker
cancels the batch once all its callers have) from one a worker is calling directly (409). A
cancel of such a job is a key of its own: the cancel mark (queues/cancel.py) already says the
worker started it.
"""

from __future__ import annotations

from typing import Any


#: How long a placement (and a cancel asked of it) is kept: a provider batch may take up to
#: 24 hours, plus a margin.
PLACEMENT_TTL_S = 25 * 3600


def placement_prefix(key_prefix: str) -> str:
    """The prefix of every placement key under the broker's ``key_prefix``."""
    return f"{key_prefix}sluice:batch-placement:"


def embed_placement_prefix(key_prefix: str) -> str:
    """The prefix of every embedding pack's placement key (workers/embeddings/placements.py):
    the task id, then ``:<chunk>``."""
    return f"{key_prefix}sluice:embed-placement:"


def in_provider_batch(client: Any, key_prefix: str, task_id: str) -> bool:
    """Is the request of ``task_id`` (a chat request, or an embedding request whose first
    call went into a pack's batch) waiting in a submitted provider batch? (raises the
    client's errors)"""
    return bool(client.exists(placement_prefix(key_prefix) + task_id,
                              f"{embed_placement_prefix(key_prefix)}{task_id}:0"))


def _asked_key(key_prefix: str, task_id: str) -> str:
    return f"{key_prefix}sluice:batch-cancel:{task_id}"


def ask_cancel(client: Any, key_prefix: str, task_id: str) -> bool:
    """Ask to cancel the request of ``task_id`` if it waits in a provider batch: True then
    (its worker counts it on its next poll), False when it is not in one."""
    if not in_provider_batch(client, key_prefix, task_id):
        return False
    client.set(_asked_key(key_prefix, task_id), b"1", ex=PLACEMENT_TTL_S)
    return True


def cancel_asked(client: Any, key_prefix: str, task_id: str) -> bool:
    """Did the caller of the batched request of ``task_id`` ask to cancel it?"""
    return bool(client.exists(_asked_key(key_prefix, task_id)))
