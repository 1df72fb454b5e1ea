"""The Celery app factory: JSON only, acks late, four lane/backend queues, on Redis or RabbitMQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from models.domain.settings import Settings
from queues.names import DEAD_LETTER, QUEUES, TASK_API, TASK_GPU
from scheduler.beat import beat_schedule
from scheduler.privacy_beat import privacy_schedule

#: Modules the *worker* imports to find tasks by name; the producer never imports them.
TASK_MODULES = ["workers.tasks", "workers.governor_tasks", "workers.privacy_tasks",
                "workers.sweeper_tasks", "workers.embeddings.tasks"]


def create_app(settings: Settings, *, name: str = "sluicegate") -> Celery:
    """Build a configured Celery app; nothing connects until a task is sent or a worker starts."""
    app = Celery(name, broker=settings.broker.url, backend=settings.broker.result_backend,
                 include=TASK_MODULES, set_as_current=False)
    app.conf.update(celery_config(settings))
    # Workers read their settings from the app they were started with, not from import time.
    app.sluice_settings = settings  # type: ignore[attr-defined]
    _redact_worker_logs(settings)
    if settings.broker.is_redis():
        from queues.kombu_clients import install

        install()
    if settings.broker.is_amqp():
        _declare_all_queues_at_worker_start(app)
    return app


def _declare_all_queues_at_worker_start(app: Celery) -> None:
    """Declare every queue when a worker of ``app`` starts, not only those it consumes.

    Celery binds each of the app's queues to its delayed-delivery exchange at consumer start,
    and a queue no worker declared yet (a GPU queue on an API worker) fails that bind: its
    retries with a countdown would then have nowhere to come back to.
    """
    from celery import signals

    def on_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()

    signals.worker_init.connect(on_init, weak=False)


def _redact_worker_logs(settings: Settings) -> None:
    """Mask provider keys in every log line a worker of this app writes."""
    from celery import signals

    from models.domain.redact import Redactor, install

    p = settings.providers
    redactor = Redactor(k.get_secret_value() for k in (p.openai_api_key, p.anthropic_api_key)
                        if k is not None)

    def on_setup(logger: Any = None, **_: Any) -> None:
        install(redactor, [logger] if logger is not None else None)

    # weak=False: the handler is a closure that must outlive this function.
    signals.after_setup_logger.connect(on_setup, weak=False)
    signals.after_setup_task_logger.connect(on_setup, weak=False)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration mapping for ``settings``."""
    lanes = settings.lanes
    longest = max(lanes.interactive.time_limit_s, lanes.async_.time_limit_s)
    amqp = settings.broker.is_amqp()
    # RabbitMQ: a topic exchange, so Celery's native delayed delivery carries a retry's
    # countdown in the broker (quorum queues fix a consumer's prefetch: a countdown held in
    # the worker would block a slot); a routing key without wildcards matches as a direct one.
    exchange = Exchange("sluice", type="topic" if amqp else "direct")
    args = queue_arguments(settings) if amqp else None
    # What RabbitMQ drops (past a quorum queue's delivery limit, 20 by default from RabbitMQ 4;
    # rejected without requeue) goes to the dead letters instead.
    lane_args = {**args, "x-dead-letter-exchange": "sluice",
                 "x-dead-letter-routing-key": DEAD_LETTER} if args else None
    conf: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task is acknowledged after it ran, and redelivered if its worker died; the ledger
        # and the reservation settle are idempotent on the request id, so running twice is safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_queues": [Queue(q, exchange, routing_key=q, queue_arguments=lane_args)
                        for q in QUEUES]
        + [Queue(DEAD_LETTER, exchange, routing_key=DEAD_LETTER, queue_arguments=args)],
        "task_default_queue": "interactive.api",
        "task_default_exchange": "sluice",
        "task_default_routing_key": "interactive.api",
        "task_routes": {TASK_API: {"queue": "interactive.api"},
                        TASK_GPU: {"queue": "interactive.gpu"}},
        "result_expires": settings.broker.result_expires,
        # Flower turns events on in the workers it watches; always-on costs every request.
        "worker_send_task_events": settings.broker.task_events,
        "task_send_sent_event": settings.broker.send_sent_events,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        # Redis redelivers an unacked message after this; it must outlast the longest task.
        "broker_transport_options": restore_options(settings.broker.visibility_timeout_s
                                                    or int(longest * 2) + 60),
        # A producer facing a down broker must fail fast with BrokerError, not hang: kombu's
        # defaults retry the connection for many seconds per publish.
        "broker_connection_timeout": settings.broker.connect_timeout_s,
        "task_publish_retry_policy": {"max_retries": settings.broker.publish_max_retries,
                                      "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 0.5},
        # Undecodable or unknown messages are parked on the dead-letter queue with a reason
        # (Celery's own consumer would ack and drop them).
        "worker_consumer": "queues.dead_letter:DeadLetterConsumer",
        "result_backend_transport_options": {"retry_policy": {"max_retries": 3}},
        "beat_schedule": {**beat_schedule(settings), **privacy_schedule(settings)},
    }
    url = settings.broker.url
    prefix = settings.broker.key_prefix
    if prefix and url.startswith(("redis://", "rediss://")):
        conf["broker_transport_options"]["global_keyprefix"] = prefix
    if prefix and settings.broker.result_backend.startswith(("redis://", "rediss://")):
        conf["result_backend_transport_options"]["global_keyprefix"] = prefix
    if url.startswith("memory://"):
        # In-process transport: poll often, there is no server round trip to save.
        conf["broker_transport_options"]["polling_interval"] = 0.005
    if url.startswith("filesystem://"):
        conf["broker_transport_options"] = filesystem_options(settings.home / "broker")
    if amqp:
        conf["broker_transport_options"] = amqp_options()
    return conf


def queue_arguments(settings: Settings) -> dict[str, Any]:
    """Declaration arguments of the four queues (and the dead letters) on RabbitMQ.

    Quorum queues are replicated and durable. RabbitMQ 4 honours two priorities in them
    (above 4 is high: the interactive lane's 9; the async lane's 1 is normal); 3.x ignores
    priorities there. Lanes never share a queue, so the lane split, not priority, is what
    keeps a backlog of async work from delaying interactive requests. Classic queues take
    ``x-max-priority`` and order by priority fully, on one node's disk.
    """
    if settings.broker.queue_type == "quorum":
        return {"x-queue-type": "quorum"}
    return {"x-max-priority": 10}


def amqp_options() -> dict[str, Any]:
    """py-amqp transport options: every publish waits for the broker's confirm.

    Without confirms a message the broker dropped while restarting is gone with no error;
    with them the publish raises (and kombu's retry policy sends it again), so a producer
    either has its message on disk in the queue or a typed BrokerError.
    """
    return {"confirm_publish": True}


def filesystem_options(folder: Path) -> dict[str, Any]:
    """Transport options of the embedded ``filesystem://`` broker (remote control included)."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"), "store_processed": False,
            "control_folder": str(folder / "control"), "polling_interval": 0.01}


def restore_options(visibility_s: float) -> dict[str, Any]:
    """Redis transport options that redeliver a dead worker's messages soon after
    ``visibility_s``: kombu scans for them only every interval x throttle seconds (10 x 10 by
    default), which would leave a lost message waiting up to 100 s past its timeout."""
    return {"visibility_timeout": visibility_s,
            "unacked_restore_interval": max(1, min(10, int(visibility_s // 4))),
            "unacked_restore_throttle": 1}
