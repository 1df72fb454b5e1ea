"""Periodic (beat) tasks of the budget governor, and the worker hooks that honour queue pauses."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready
from celery.worker.control import control_command

from queues.names import QUEUES
from queues.wiring import ledger_sessions
from scheduler import governor
from scheduler.beat import GOVERNOR_QUEUE, TICK_TASK
from workers.runtime import get_runtime

log = logging.getLogger("sluice.governor")


@shared_task(name=TICK_TASK, bind=True, ignore_result=True)
def governor_tick(self: Task) -> dict[str, int]:
    """Roll windows, release expired reservations, lift finished pauses, alert, sync consumers."""
    return governor.tick(get_runtime(self.app).sessions, control=self.app.control, queues=QUEUES)


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # A worker started while a queue is paused must not consume it: the pause is in the
    # database, not in any message this worker could have received.
    if sender is None or getattr(sender.app, "sluice_settings", None) is None:
        return
    try:
        paused = _paused(sender.app)
    except Exception as exc:  # noqa: BLE001 - the second check in each task still refuses
        log.error("could not read queue pauses at start (%s); tasks of paused queues will be "
                  "refused one by one until the database answers", exc)
        paused = set()
    honour_pauses(sender, paused)


def _paused(app: Any) -> set[str]:
    # A throwaway engine, not the runtime's: a prefork parent must not hand pooled connections
    # down to its children.
    sessions = ledger_sessions(app.sluice_settings)
    try:
        with sessions() as s:
            return set(governor.paused_queues(s))
    finally:
        sessions.kw["bind"].dispose()


def honour_pauses(consumer: Any, paused: Iterable[str]) -> list[str]:
    """Remember ``consumer``'s own queues, consume the governor queue, cancel paused ones."""
    home = {q.name for q in consumer.task_consumer.queues} - {GOVERNOR_QUEUE}
    consumer.sluice_home_queues = frozenset(home)
    consumer.add_task_queue(GOVERNOR_QUEUE)
    cancelled = sorted(home & set(paused))
    for q in cancelled:
        consumer.cancel_task_queue(q)
        log.warning("queue %s is paused: not consuming it until it is resumed", q)
    return cancelled


@control_command(name=governor.RESUME_COMMAND, args=[("queues", list)],
                 signature="<queue> [queue ...]")
def sluice_resume_queues(state: Any, queues: Iterable[str] = (), **_: Any) -> dict[str, Any]:
    """Consume again those of ``queues`` this worker was started with (and no others)."""
    consumer = state.consumer
    home = getattr(consumer, "sluice_home_queues", None)
    if home is None:
        return {"ok": "no sluice home queues on this worker"}
    todo = [q for q in queues if q in home and not consumer.task_consumer.consuming_from(q)]
    for q in todo:
        consumer.call_soon(consumer.add_task_queue, q)
    return {"ok": f"consuming again: {', '.join(todo) or 'nothing new'}"}


@control_command(name=governor.PAUSE_COMMAND, args=[("queues", list)],
                 signature="<queue> [queue ...]")
def sluice_pause_queues(state: Any, queues: Iterable[str] = (), **_: Any) -> dict[str, Any]:
    """Stop consuming those of ``queues`` this worker still consumes (quiet when none)."""
    consumer = state.consumer
    todo = [q for q in queues if q != GOVERNOR_QUEUE and consumer.task_consumer is not None
            and consumer.task_consumer.consuming_from(q)]
    for q in todo:
        consumer.call_soon(consumer.cancel_task_queue, q)
    return {"ok": f"paused: {', '.join(todo) or 'nothing new'}"}
