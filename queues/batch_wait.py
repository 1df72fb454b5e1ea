"""Where a request waits in a provider batch: the key workers write and the front door reads.

A worker records each batched request's place (workers/batch/placements.py) under this key.
The door reads it to tell a job that is waiting in a provider batch (cancellable: the worker
cancels the batch once all its callers have) from one a worker is calling directly (409).
"""

from __future__ import annotations

from typing import Any


def placement_prefix(key_prefix: str) -> str:
    """The prefix of every placement key under the broker's ``key_prefix``."""
    return f"{key_prefix}sluice:batch-placement:"


def in_provider_batch(client: Any, key_prefix: str, task_id: str) -> bool:
    """Is the request of ``task_id`` waiting in a submitted provider batch? (raises the
    client's errors)"""
    return bool(client.exists(placement_prefix(key_prefix) + task_id))
