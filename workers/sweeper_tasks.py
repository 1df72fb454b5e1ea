"""Beat tasks: re-send messages the broker lost; delete Gemini context caches gone cold."""

from __future__ import annotations

from celery import Task, shared_task

from queues.inflight import sweep_once
from scheduler.beat import CONTEXT_CACHE_TASK, SWEEP_TASK
from workers.runtime import get_runtime


@shared_task(name=SWEEP_TASK, bind=True, ignore_result=True)
def sweep_inflight(self: Task) -> dict[str, int]:
    """One pass of :func:`queues.inflight.sweep_once`."""
    rt = get_runtime(self.app)
    if rt.inflight is None:
        return {}
    return sweep_once(rt.inflight, self.app, rt.sessions,
                      older_than_s=rt.settings.broker.resend_after_s,
                      claim_ttl_s=rt.heartbeat().claim_ttl_s)


@shared_task(name=CONTEXT_CACHE_TASK, bind=True, ignore_result=True)
def sweep_context_caches(self: Task) -> int:
    """One pass of :func:`workers.context_cache.sweep`: cold explicit caches deleted."""
    from workers.context_cache import sweep

    return sweep(get_runtime(self.app))
