"""The beat job that enforces prompt-text retention, merged into the Celery beat schedule."""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings
from scheduler.beat import GOVERNOR_QUEUE

#: Deletes stored prompt/answer text past its expiry (models/db/stored_text.py).
PURGE_TASK = "sluice.privacy.purge_text"


def privacy_schedule(settings: Settings) -> dict[str, Any]:
    """Celery ``beat_schedule`` entries of the retention purge."""
    every = settings.privacy.purge_interval_s
    return {
        "sluice-privacy-purge-text": {
            "task": PURGE_TASK,
            "schedule": every,
            # The governor queue: every worker consumes it and no pause ever stops it, so
            # retention is enforced even while every lane is paused.
            "options": {"queue": GOVERNOR_QUEUE, "routing_key": GOVERNOR_QUEUE,
                        "expires": every},
        },
    }
