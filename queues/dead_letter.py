"""The dead-letter queue: messages a worker cannot decode or run are parked there with a reason."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery
from celery.worker.consumer.consumer import Consumer
from kombu import Exchange, Queue

from queues.names import DEAD_LETTER

log = logging.getLogger("sluice.dead_letter")
#: Parked bodies are cut to this many characters: enough to debug, never a memory bomb.
MAX_BODY_CHARS = 64_000


def dead_queue(app: Celery) -> Queue:
    """The dead-letter queue as ``app`` declares it (queues.app: on RabbitMQ a quorum queue on
    a topic exchange; redeclaring the exchange as direct there would fail the publish)."""
    for queue in app.conf.task_queues or ():
        if queue.name == DEAD_LETTER:
            return queue
    return Queue(DEAD_LETTER, Exchange("sluice", type="direct"), routing_key=DEAD_LETTER)


def park(app: Celery, body: Any, reason: str, *, source: str = "", headers: Any = None) -> None:
    """Publish ``body`` with ``reason`` on the dead-letter queue (JSON, whatever the body was)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode("utf-8", errors="replace")
    if not isinstance(body, (str, int, float, bool, list, dict)) and body is not None:
        body = repr(body)
    payload = {"reason": reason, "source_queue": source, "parked_at": time.time(),
               "headers": {str(k): str(v)[:500] for k, v in dict(headers or {}).items()},
               "body": body[:MAX_BODY_CHARS] if isinstance(body, str) else body}
    with app.producer_or_acquire() as producer:
        producer.publish(payload, exchange="sluice", routing_key=DEAD_LETTER, serializer="json",
                         declare=[dead_queue(app)], retry=True,
                         retry_policy={"max_retries": 3, "interval_max": 1})


def drain(app: Celery, *, limit: int = 100, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Take up to ``limit`` parked messages off the dead-letter queue (operators, tests)."""
    out: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(dead_queue(app))
        try:
            while len(out) < limit:
                try:
                    msg = queue.get(block=True, timeout=timeout)
                except queue.Empty:
                    break
                out.append(msg.payload)
                msg.ack()
        finally:
            queue.close()
    return out


def _source(message: Any) -> str:
    info = getattr(message, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or "")


class DeadLetterConsumer(Consumer):
    """Celery's consumer, except that a message it cannot use is parked, not dropped."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # Celery logs and acks here: the message would be gone with no trace. Park it first;
        # ack only once it is parked, so a broker hiccup redelivers instead of losing it.
        self._park_and_ack(message, message.body, f"undecodable message "
                           f"({message.content_type}): {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._park_and_ack(message, body, "not a task message (no task header)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (getattr(message, "headers", None) or {}).get("task", "?")
        self._park_and_ack(message, body, f"unknown task {name!r}: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._park_and_ack(message, body, f"invalid task message: {exc}")

    def _park_and_ack(self, message: Any, body: Any, reason: str) -> None:
        log.error("parking a message on %s: %s", DEAD_LETTER, reason)
        if body is None:
            # Celery passes no body for an unknown protocol-2 task: park the raw one instead,
            # or the dead letter would not say what was sent.
            body = getattr(message, "body", None)
        try:
            park(self.app, body, reason, source=_source(message),
                 headers=getattr(message, "headers", None))
        except Exception as exc:  # noqa: BLE001 - cannot park: requeue rather than lose it
            log.error("could not park the message (%s); it is requeued", exc)
            message.reject_log_error(log, self.connection_errors, requeue=True)
            return
        message.ack()
