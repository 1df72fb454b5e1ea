"""The governor's periodic (beat) jobs, merged into the Celery configuration."""

from __future__ import annotations

from typing import Any

from models.domain.settings import Settings

#: One governor pass: window rollover, expired reservations, budget pauses, alerts, consumers.
TICK_TASK = "sluice.governor.tick"
#: Every sluice worker also consumes this queue (added when it starts), and no budget or
#: operator ever pauses it: the job that resumes paused lanes must itself keep flowing.
GOVERNOR_QUEUE = "sluice.governor"
#: Seconds between ticks: the longest a rollover resume or an expired reservation waits.
TICK_SECONDS = 5.0
#: Re-sends messages a broker lost (queues.inflight); runs on the governor queue too.
SWEEP_TASK = "sluice.inflight.sweep"
SWEEP_SECONDS = 30.0
#: Deletes Gemini explicit context caches whose prefix went cold (their storage stops).
CONTEXT_CACHE_TASK = "sluice.context_cache.sweep"
CONTEXT_CACHE_SECONDS = 60.0


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """Celery's ``beat_schedule`` mapping for the governor (run ``celery beat`` once per site)."""
    return {
        "sluice-governor-tick": {
            "task": TICK_TASK,
            "schedule": TICK_SECONDS,
            # A tick nobody took in time is useless (the next one does the same work).
            "options": {"queue": GOVERNOR_QUEUE, "routing_key": GOVERNOR_QUEUE,
                        "expires": TICK_SECONDS * 2},
        },
        "sluice-inflight-sweep": {
            "task": SWEEP_TASK,
            "schedule": SWEEP_SECONDS,
            "options": {"queue": GOVERNOR_QUEUE, "routing_key": GOVERNOR_QUEUE,
                        "expires": SWEEP_SECONDS},
        },
        "sluice-context-cache-sweep": {
            "task": CONTEXT_CACHE_TASK,
            "schedule": CONTEXT_CACHE_SECONDS,
            "options": {"queue": GOVERNOR_QUEUE, "routing_key": GOVERNOR_QUEUE,
                        "expires": CONTEXT_CACHE_SECONDS},
        },
    }
