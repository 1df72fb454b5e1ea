"""Beat task: re-send messages the broker lost (sent long ago, never claimed in the ledger)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from models.db import ledger
from queues.inflight import DEFAULT_RESEND_AFTER_S, InflightMessage
from scheduler.beat import SWEEP_TASK
from workers.runtime import get_runtime


@shared_task(name=SWEEP_TASK, bind=True, ignore_result=True)
def sweep_inflight(self: Task) -> dict[str, int]:
    """One pass of :meth:`queues.inflight.Inflight.sweep` against the ledger."""
    rt = get_runtime(self.app)
    if rt.inflight is None:
        return {}

    def state_of(request_id: str) -> str | None:
        with rt.sessions() as s:
            row = ledger.get(s, request_id)
        return None if row is None else row.outcome

    def send(msg: InflightMessage) -> Any:
        return self.app.send_task(msg.task, args=msg.args, task_id=msg.task_id,
                                  queue=msg.queue, routing_key=msg.queue, **msg.options)

    older = getattr(rt.settings.broker, "resend_after_s", DEFAULT_RESEND_AFTER_S)
    return rt.inflight.sweep(send, state_of, older_than_s=older)
