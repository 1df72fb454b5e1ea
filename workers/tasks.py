"""Thin Celery tasks: decode, hand to the service, return its JSON reply."""

from __future__ import annotations

import functools
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_init

from queues.dead_letter import park
from queues.handle import STASHED
from queues.names import TASK_API, TASK_GPU
from workers import log_privacy
from workers.gpu.runtime import install_gpu_signals
from workers.runtime import get_runtime
from workers.service import ClaimBusy, execute

# Only worker processes import this module (the app's `include`). A worker that consumes a
# *.gpu queue starts its vLLM engine at boot (worker_init) and stops it at shutdown; API
# workers ignore the hooks. Connecting the handlers is all that happens here.
install_gpu_signals()


@worker_init.connect(weak=False)
def _hide_replies_in_logs(**_: Any) -> None:
    # Celery logs every task's return value at INFO; ours carries the answer text.
    log_privacy.install()


def _previous(task: Task) -> Any:
    """Reads the result an earlier run of this task stored (asked only for duplicates)."""

    def read() -> Any:
        try:
            return task.AsyncResult(task.request.id).result
        except Exception:  # noqa: BLE001 - the result store is an optimisation here
            return None

    return read


def _parked_if_invalid(task: Task, reply: dict[str, Any], message: Any) -> dict[str, Any]:
    """A message that is not an envelope also goes to the dead-letter queue, with the reason."""
    error = reply.get("error") or {}
    if not reply.get("ok") and (error.get("details") or {}).get("field") == "message":
        info = task.request.delivery_info or {}
        park(task.app, message, error.get("message", "invalid envelope"),
             source=str(info.get("routing_key") or ""))
    return reply


#: A busy claim is retried this many times, each after the claim's lease could have expired.
BUSY_RETRIES = 3


class _Stash:
    """Keeps an answer where a redelivery of this task finds it, without waking its caller.

    Called before the ledger write: a worker killed between the two leaves an answer that the
    redelivered task bills instead of buying again (workers.service.execute). Celery stores and
    pushes the reply as usual once the task returns, after the ledger row is final.
    """

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, reply: dict[str, Any]) -> None:
        from celery.backends.redis import RedisBackend

        backend = self.task.backend
        if not isinstance(backend, RedisBackend):
            return  # polling stores would hand the answer over before it is billed
        task_id = self.task.request.id
        # Not SUCCESS: Celery refuses to overwrite a stored success (so its own store, with
        # the PUBLISH that wakes the caller, would never happen), and a caller reading the
        # store must not take the answer before it is billed. A redelivery reads it as any
        # non-failure state's result.
        meta = {"status": STASHED, "result": reply, "traceback": None, "children": [],
                "date_done": None, "task_id": task_id}
        # A plain SET: the PUBLISH that wakes the caller comes with Celery's own store.
        backend.ensure(functools.partial(backend.client.set, ex=backend.expires),
                       (backend.get_key_for_task(task_id), backend.encode(meta)))


def _run(task: Task, message: dict[str, Any]) -> dict[str, Any]:
    reply = _parked_if_invalid(task, execute(message, get_runtime(task.app),
                                             previous=_previous(task), stash=_Stash(task)),
                               message)
    error = reply.get("error") or {}
    if error.get("code") == ClaimBusy.code and task.request.retries < BUSY_RETRIES:
        # Usually the run holding the claim died with its worker (kill -9): come back when
        # its lease has run out and take the request over, instead of ending it in an error.
        raise task.retry(countdown=float((error.get("details") or {}).get("retry_in", 60)),
                         max_retries=BUSY_RETRIES)
    return reply


_EXECUTE = {"bind": True, "acks_late": True, "reject_on_worker_lost": True,
            "resultrepr_maxsize": log_privacy.REPR_CHARS}


@shared_task(name=TASK_API, **_EXECUTE)
def execute_api(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Serve one request on a hosted provider (OpenAI, Anthropic)."""
    return _run(self, message)


@shared_task(name=TASK_GPU, **_EXECUTE)
def execute_gpu(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Serve one request on the self-hosted vLLM engine of this worker."""
    return _run(self, message)


@shared_task(name="sluice.ping")
def ping() -> str:
    """A no-op: the floor of a Celery round trip (benchmarks) and a liveness probe."""
    return "pong"
