"""Track every message from publish to finish, and re-send the ones a broker lost.

Redis-transport gap (celery/celery#4354, kombu#305): a worker killed between popping a message
and recording it as unacked loses it for good; the visibility timeout never brings it back. The
producer therefore records each message (one pipelined round trip), the worker forgets it once
the ledger row is final, and a beat job re-sends messages that are old and never claimed.
Re-sending is safe: the ledger claim makes a second delivery return the first one's result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Ledger lookups that may fail in a row before a sweep gives up until its next run.
MAX_FAILED_LOOKUPS = 3

#: Seconds an unclaimed message may wait before the sweeper re-sends it.
DEFAULT_RESEND_AFTER_S = 300.0


@dataclass
class InflightMessage:
    """What is needed to publish a message again."""

    task_id: str
    request_id: str
    task: str
    queue: str
    args: list[Any]
    options: dict[str, Any]


class Inflight:
    """A Redis sorted set of task ids by send time, beside a hash of their messages."""

    def __init__(self, client: Any, prefix: str = "sluice:") -> None:
        self.client = client
        self.times = f"{prefix}inflight:ts"
        self.bodies = f"{prefix}inflight:msg"

    def add(self, msg: InflightMessage, now: float | None = None) -> None:
        """Record ``msg`` as sent (before publishing, so a crash in between loses nothing)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.bodies, msg.task_id, json.dumps(msg.__dict__))
        pipe.zadd(self.times, {msg.task_id: time.time() if now is None else now})
        pipe.execute()

    def done(self, task_id: str) -> None:
        """Forget ``task_id``: its ledger row is final."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.times, task_id)
        pipe.hdel(self.bodies, task_id)
        pipe.execute()

    def stale(self, older_than_s: float, limit: int = 500,
              now: float | None = None) -> list[InflightMessage]:
        """Messages sent more than ``older_than_s`` ago and not yet finished."""
        cutoff = (time.time() if now is None else now) - older_than_s
        ids = self.client.zrangebyscore(self.times, "-inf", cutoff, start=0, num=limit)
        if not ids:
            return []
        raw = self.client.hmget(self.bodies, ids)
        out = []
        for task_id, body in zip(ids, raw):
            if body is None:  # finished between the two reads
                self.client.zrem(self.times, task_id)
                continue
            out.append(InflightMessage(**json.loads(body)))
        return out

    def sweep(self, send: Callable[[InflightMessage], None],
              state_of: Callable[[str], str | None], *, older_than_s: float,
              now: float | None = None) -> dict[str, int]:
        """Re-send stale messages that never finished; forget finished ones.

        ``state_of(request_id)`` is the ledger outcome (None: no row, nobody started it;
        ``live``: running with a fresh heartbeat, never re-sent).
        """
        counts = {"resent": 0, "finished": 0, "running": 0, "live": 0, "failed": 0}
        t = time.time() if now is None else now
        failed_in_a_row = 0
        for msg in self.stale(older_than_s, now=t):
            try:
                state = state_of(msg.request_id)
                failed_in_a_row = 0
            except Exception as exc:  # noqa: BLE001 - one bad lookup must not stop the sweep
                log.warning("in-flight sweep could not read the ledger for %s: %s",
                            msg.request_id, exc)
                counts["failed"] += 1
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_LOOKUPS:
                    break  # the ledger is away, not one row: the next sweep tries again
                continue
            if state == "live":
                # A run that renews its heartbeat holds it: a copy would only wait for it.
                counts["live"] += 1
                continue
            if state in (None, "running"):
                # Never claimed, or claimed by a run whose worker may have died with the
                # message: send it again. The ledger claim makes this safe: a live claim
                # answers "busy" (retried after its lease), a dead one is taken over.
                send(msg)
                self.client.zadd(self.times, {msg.task_id: t})  # at most one re-send a period
                counts["resent" if state is None else "running"] += 1
            else:
                self.done(msg.task_id)
                counts["finished"] += 1
        return counts


def inflight_for(broker_url: str, prefix: str) -> Inflight | None:
    """An Inflight on the broker's Redis, or None for other transports (nothing to patch)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return Inflight(redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2),
                    prefix=prefix or "sluice:")


def sweep_once(inflight: Inflight, app: Any, sessions: Any, *, older_than_s: float,
               claim_ttl_s: float = 30.0) -> dict[str, int]:
    """One sweep against the ledger, re-sending through ``app``: the beat job's whole work.

    A running row whose heartbeat is younger than ``claim_ttl_s`` is a live run: not re-sent.
    """
    from datetime import datetime, timezone

    from models.db import ledger

    def state_of(request_id: str) -> str | None:
        with sessions() as s:
            row = ledger.get(s, request_id)
        if row is None:
            return None
        beat = row.heartbeat_at
        if row.outcome == "running" and beat is not None:
            beat = beat if beat.tzinfo else beat.replace(tzinfo=timezone.utc)
            if (datetime.now(timezone.utc) - beat).total_seconds() < claim_ttl_s:
                return "live"
        return row.outcome

    def send(msg: InflightMessage) -> None:
        app.send_task(msg.task, args=msg.args, task_id=msg.task_id, queue=msg.queue,
                      routing_key=msg.queue, **msg.options)

    return inflight.sweep(send, state_of, older_than_s=older_than_s)
