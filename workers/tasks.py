"""Thin Celery tasks: decode, hand to the service, return its JSON reply."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from queues.dead_letter import park
from queues.names import TASK_API, TASK_GPU
from workers.gpu.runtime import install_gpu_signals
from workers.runtime import get_runtime
from workers.service import execute

# Only worker processes import this module (the app's `include`). A worker that consumes a
# *.gpu queue starts its vLLM engine at boot (worker_init) and stops it at shutdown; API
# workers ignore the hooks. Connecting the handlers is all that happens here.
install_gpu_signals()


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


@shared_task(name=TASK_API, bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_api(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Serve one request on a hosted provider (OpenAI, Anthropic)."""
    return _parked_if_invalid(self, execute(message, get_runtime(self.app),
                                            previous=_previous(self)), message)


@shared_task(name=TASK_GPU, bind=True, acks_late=True, reject_on_worker_lost=True)
def execute_gpu(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Serve one request on the self-hosted vLLM engine of this worker."""
    return _parked_if_invalid(self, execute(message, get_runtime(self.app),
                                            previous=_previous(self)), message)


@shared_task(name="sluice.ping")
def ping() -> str:
    """A no-op: the floor of a Celery round trip (benchmarks) and a liveness probe."""
    return "pong"
