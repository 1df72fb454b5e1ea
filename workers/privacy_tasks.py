"""Periodic (beat) task that deletes stored prompt and answer text past its retention."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from models.db import stored_responses
from models.db.stored_text import delete_expired
from scheduler.privacy_beat import PURGE_TASK
from workers.runtime import get_runtime

log = logging.getLogger("sluice.privacy")


@shared_task(name=PURGE_TASK, bind=True, ignore_result=True)
def purge_text(self: Task) -> int:
    """Delete every stored text whose expiry has passed; returns how many rows went."""
    with get_runtime(self.app).session() as s:
        removed = delete_expired(s)
        # Kept responses are prompt and answer text too: the same retention holds for them.
        removed += stored_responses.delete_expired(s)
    if removed:
        log.info("deleted %d stored prompt texts past their retention", removed)
    return removed
