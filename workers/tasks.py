"""Thin Celery tasks: decode, hand to the service, return its JSON reply."""

from __future__ import annotations

from typing import Any

import logging

from celery import Task, shared_task
from celery.exceptions import Ignore
from celery.signals import task_postrun, worker_init

from models.domain.errors import BatchPending
from queues.dead_letter import park
from queues import cached_reads
from queues.envelope import STASH_SUFFIX
from queues.gc_freeze import freeze_once
from queues.names import TASK_API, TASK_GPU
from workers import log_privacy
from workers.batch.seam import max_visits
from workers.gpu.runtime import install_gpu_signals
from workers.rate_wait import admit_deferred, settle_tokens
from workers.runtime import get_runtime
from queues.retried_results import is_set_aside
from workers.redelivery import SET_ASIDE, ClaimBusy, Superseded
from workers.service import execute

# Only worker processes import this module (the app's `include`). A worker that consumes a
# *.gpu queue starts its vLLM engine at boot (worker_init) and stops it at shutdown; API
# workers ignore the hooks. Connecting the handlers is all that happens here.
install_gpu_signals()
log = logging.getLogger(__name__)


@worker_init.connect(weak=False)
def _hide_replies_in_logs(**_: Any) -> None:
    # Celery logs every task's return value at INFO; ours carries the answer text.
    log_privacy.install()
    # Task threads read Celery's cached properties without the lock kombu takes on every read
    # (a worker only, at boot, before any task thread runs).
    cached_reads.install()


@task_postrun.connect(weak=False)
def _freeze_after_first_task(**_: Any) -> None:
    # The runtime (ledger engine, SDK clients, catalogue, tokenizer) is built by the first
    # task: after it, the heap is what the process keeps; freeze it out of full collections.
    freeze_once()


def _previous(task: Task) -> Any:
    """Reads the result an earlier run of this task stored (asked only for duplicates)."""

    def read() -> Any:
        try:
            meta = task.backend.get_task_meta(task.request.id, cache=False)
        except Exception:  # noqa: BLE001 - the result store is an optimisation here
            return None
        return SET_ASIDE if is_set_aside(meta) else meta.get("result")

    return read


def set_aside_error(task: Task) -> None:
    """This run retries an errored request: set the failed run's stored error aside, so that
    this run's reply is stored (Celery keeps a stored SUCCESS, and an error reply is one)."""
    try:
        from queues.retried_results import set_aside_error as set_aside

        set_aside(task.backend, task.request.id)
    except Exception as exc:  # noqa: BLE001 - the producer set it aside already, most often
        log.warning("could not set aside the earlier error of %s: %s", task.request.id, exc)


def ignored_if_superseded(reply: dict[str, Any]) -> dict[str, Any]:
    """A copy whose caller retried stores nothing: Celery's Ignore acks it, unstored."""
    if reply.get("code") == Superseded.code:
        raise Ignore()
    return reply


def _parked_if_invalid(task: Task, reply: dict[str, Any], message: Any) -> dict[str, Any]:
    """A message that is not an envelope also goes to the dead-letter queue, with the reason."""
    error = reply.get("error") or {}
    if not reply.get("ok") and (error.get("details") or {}).get("field") == "message":
        info = task.request.delivery_info or {}
        park(task.app, message, error.get("message", "invalid envelope"),
             source=str(info.get("routing_key") or ""))
    return reply


#: A busy claim is retried this many times unless its reply says how often (as long as a live
#: run can take, in steps of the claim's heartbeat lease).
BUSY_RETRIES = 3


#: Lifetime of a stashed answer: longer than any redelivery takes to arrive.
STASH_TTL_S = 6 * 3600


class _Stash:
    """Keeps an answer, under a result-store key of its own, where a redelivery finds it.

    Kept before the ledger write, with the reply itself: a worker killed between the two
    leaves an answer that the redelivered task bills instead of buying again (its caller
    already has it), and a redelivery that finds the row done returns it (workers.service).
    Its own key, not the task's: Celery writes RETRY or FAILURE states over the task's key (a
    busy claim retried, a crash) while no SUCCESS is stored there yet.
    """

    def __init__(self, task: Task) -> None:
        self.task = task

    def _backend(self) -> Any:
        from celery.backends.redis import RedisBackend

        backend = self.task.backend
        return backend if isinstance(backend, RedisBackend) else None

    def _key(self, backend: Any) -> Any:
        return backend.get_key_for_task(self.task.request.id, key=STASH_SUFFIX)

    def keep(self, record: dict[str, Any]) -> None:
        """Keep ``record`` and store and push its reply as the task's result, in one atomic
        Redis step: the caller has its answer before the ledger write, and no reply is out
        that a redelivery could not find in the stash (ARCHITECTURE.md, change 12)."""
        backend = self._backend()
        if backend is None:
            return  # other result stores: no stash, the ResultLost window stays open there
        backend.ensure(self._write, (backend, record))

    def _write(self, backend: Any, record: dict[str, Any]) -> None:
        from celery import states

        # A redelivery comes within the visibility timeout or the sweeper's period; the stash
        # need not live as long as results do. Celery's 0 means "never expire": no EX then.
        ttl = min(backend.expires or STASH_TTL_S, STASH_TTL_S)
        task_id = self.task.request.id
        # The meta Celery stores when the task returns (its store then finds this SUCCESS
        # and writes nothing); what the handles and the front door's waiter read and decode.
        meta = backend._get_result_meta(result=backend.encode_result(record["reply"],
                                                                     states.SUCCESS),
                                        state=states.SUCCESS,
                                        traceback=None, request=self.task.request)
        meta["task_id"] = task_id
        value, key = backend.encode(meta), backend.get_key_for_task(task_id)
        with backend.client.pipeline(transaction=True) as pipe:  # MULTI: both or neither
            pipe.set(self._key(backend), backend.encode(record), ex=ttl)
            pipe.set(key, value, ex=backend.expires or None)  # as Celery's own store
            pipe.publish(key, value)
            pipe.execute()

    def set_aside_error(self) -> None:
        """This run retries the errored request: its own reply must be the stored one."""
        set_aside_error(self.task)

    def read(self) -> dict[str, Any] | None:
        backend = self._backend()
        if backend is None:
            return None
        try:
            raw = backend.client.get(self._key(backend))
            record = backend.decode(raw) if raw else None
        except Exception:  # noqa: BLE001 - unreadable means "nothing kept"
            return None
        return record if isinstance(record, dict) else None


#: A deferred async request comes back this often at most while its rate limit stays full.
RATE_WAITS = 10_000


def _run(task: Task, message: dict[str, Any]) -> dict[str, Any]:
    rt = get_runtime(task.app)
    message, wait = admit_deferred(rt.limiter, message)
    if wait is not None:
        # Over a rate limit, the async lane waits in its queue instead of failing.
        raise task.retry(args=[message], countdown=wait, max_retries=RATE_WAITS)
    reply = ignored_if_superseded(_parked_if_invalid(task, execute(
        message, rt, previous=_previous(task), stash=_Stash(task)), message))
    settle_tokens(rt.limiter, message, reply)
    error = reply.get("error") or {}
    details = error.get("details") or {}
    if error.get("code") == BatchPending.code:
        # Still in its provider batch: come back to poll it, claim and reservation kept, so
        # the caller sees it running and it is billed when the batch answers.
        if isinstance(message, dict):  # the reservation the next visit settles
            message = {**message, "reservation_id": details.get("reservation_id")}
        raise task.retry(args=[message], countdown=float(details.get("retry_in", 30)),
                         max_retries=max_visits(get_runtime(task.app).settings))
    retries = int(details.get("retries", BUSY_RETRIES))
    if error.get("code") == ClaimBusy.code and task.request.retries < retries:
        # A live run renews its claim: wait for it (the answer is then the first run's). A
        # dead one stops renewing, and a later try takes the request over.
        raise task.retry(countdown=float(details.get("retry_in", 60)), max_retries=retries)
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
