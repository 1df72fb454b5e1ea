"""Queue and task names: four queues split by lane and backend."""

from __future__ import annotations

LANES = ("interactive", "async")
BACKENDS = ("api", "gpu")
#: Every queue sluicegate uses, ``<lane>.<backend>``.
QUEUES = tuple(f"{lane}.{backend}" for lane in LANES for backend in BACKENDS)
#: Where undecodable or poisoned messages are parked with a reason.
DEAD_LETTER = "sluice.dead"

TASK_API = "sluice.execute_api"
TASK_GPU = "sluice.execute_gpu"


def queue_for(lane: str, backend: str) -> str:
    """The queue that serves ``lane`` on ``backend``."""
    name = f"{lane}.{backend}"
    if name not in QUEUES:
        raise ValueError(f"no queue for lane {lane!r} and backend {backend!r}")
    return name


def task_for(backend: str) -> str:
    """The task name that executes requests on ``backend``."""
    return TASK_GPU if backend == "gpu" else TASK_API


def queues_of(backend: str | None = None, lane: str | None = None) -> list[str]:
    """Queues filtered by backend and/or lane."""
    return [q for q in QUEUES
            if (backend is None or q.endswith("." + backend))
            and (lane is None or q.startswith(lane + "."))]
