"""What one front-door process holds: the gateway, key book, result waiter and job book."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.result import AsyncResult
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from models.domain.catalogue import Catalogue
from models.domain.errors import SluiceError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult
from models.domain.settings import Settings
from queues.app import create_app as create_celery_app
from queues.handle import Handle, decode_reply
from queues.http.auth import KeyBook
from queues.http.counting import AnthropicCounter
from queues.http.jobs import JobBook, build_jobs
from queues.http.waiter import ResultWaiter, Watch, prepare_app
from queues.producer import Gateway, connect
from queues.shed_tally import ShedTally, tally_for
from queues.token_stream import TokenReader, token_reader_for
from queues.wiring import ledger_sessions
from scheduler.shedding import LoadShedder

log = logging.getLogger(__name__)


@dataclass
class FrontDoor:
    """Built once per process when the ASGI app starts (never at import)."""

    settings: Settings
    gateway: Gateway
    keys: KeyBook
    waiter: ResultWaiter
    jobs: JobBook
    sessions: sessionmaker[Session]
    #: Sheds interactive requests past the workers' capacity (None: shedding disabled).
    shedder: LoadShedder | None = None
    #: Where this process adds its refusals for `sluice metrics` (None: no Redis broker).
    tally: ShedTally | None = None
    #: Reads answers as workers generate them, for ``stream=true`` (None: no Redis broker).
    tokens: TokenReader | None = None
    #: Asks Anthropic's count_tokens for Claude models (the Messages door's count_tokens).
    counter: AnthropicCounter | None = None

    @classmethod
    def build(cls, settings: Settings, **gateway_overrides: Any) -> FrontDoor:
        """Wire every part from ``settings``; ``gateway_overrides`` replace Gateway levers."""
        sessions = ledger_sessions(settings)
        app = prepare_app(create_celery_app(settings, name="sluicegate-frontdoor"))
        gateway = connect(settings, app=app, **gateway_overrides)
        return cls(settings=settings, gateway=gateway, keys=KeyBook(sessions),
                   waiter=ResultWaiter(app), jobs=build_jobs(settings), sessions=sessions,
                   shedder=shedder_for(settings), tally=tally_for(settings),
                   tokens=token_reader_for(settings.broker.state_url() or settings.broker.url,
                                                  settings.broker.key_prefix),
                   counter=AnthropicCounter(settings.providers))

    @property
    def catalogue(self) -> Catalogue:
        """The model catalogue the gateway routes with."""
        return self.gateway.catalogue

    def timeout_for(self, lane: str, caller_s: float | None = None) -> float:
        """How long an interactive caller is waited for: the lane's hard time limit and a
        little, or the caller's own timeout and a little when that is shorter."""
        lane_s = self.settings.lanes.get(lane).time_limit_s + 5.0
        return min(lane_s, caller_s + 1.0) if caller_s else lane_s

    def deadline_for(self, lane: str, caller_s: float | None) -> float | None:
        """The ``timeout_s`` an interactive request carries to its worker: what the caller
        will wait, but never past when this door stops waiting for it (an SDK announces 600 s
        by default, this door waits the lane's time limit and a little); a caller that says
        nothing gets its lane's queue timeout (None here), within the same bound."""
        door_s = self.timeout_for(lane)
        if caller_s:
            return min(caller_s, door_s)
        lane_s = self.settings.lanes.get(lane).queue_timeout_s
        return door_s if not lane_s or lane_s > door_s else None

    def submit(self, data: dict[str, Any], loop: asyncio.AbstractEventLoop, watch: bool,
               admit: Callable[[ChatRequest], None] | None = None, *, fresh: bool = False,
               stream: bool = False) -> tuple[Handle, Watch | None]:
        """Run the producer pipeline (blocking: call in a worker thread) and watch the result
        (``fresh``: the door minted the request id, so no earlier result can exist)."""
        handle = self.gateway.submit(data, admit=admit, stream=stream, fresh=fresh)
        if not watch:
            return handle, None
        return handle, self.waiter.watch(handle, loop, self.timeout_for(data.get("lane", ""),
                                                                        data.get("timeout_s")),
                                         fresh=fresh)

    def job_outcome(self, job_id: str) -> tuple[str, ChatResult | SluiceError | None]:
        """``(state, outcome)`` of a queued job from the result store (blocking)."""
        ar = AsyncResult(job_id, app=self.gateway.app, backend=self.waiter.backend)
        state = ar.state
        if state == "SUCCESS":
            return state, decode_reply(ar.result)
        if state == "FAILURE":
            return state, SluiceError(f"job {job_id} failed in the worker: {ar.result!r}")
        return state, None

    def started(self, request_id: str, org: str, team: str) -> bool:
        """Has a worker claimed this request of ``org``/``team``? (its ledger row exists, and
        is that tenant's: another team's row under the same id says nothing of this job;
        blocking)"""
        from models.db import ledger

        with self.sessions() as s:
            row = ledger.get(s, request_id)
        return row is not None and (row.org, row.team) == (org, team)

    def cancelling(self, task_id: str) -> bool:
        """Is a cancel mark waiting for this queued request? (blocking; False when unknown:
        a Redis blip makes a poll say "queued", not fail)"""
        if self.gateway.cancels is None:
            return False
        try:
            return self.gateway.cancels.state(task_id) == "cancelled"
        except Exception:  # noqa: BLE001 - a status poll must not fail on a side lookup
            log.debug("could not read the cancel mark of %s", task_id, exc_info=True)
            return False

    def health(self) -> dict[str, str]:
        """Can this process reach the ledger and the broker? (blocking)"""
        out: dict[str, str] = {}
        try:
            with self.sessions() as s:
                s.execute(text("SELECT 1"))
            out["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health report lists failures, not raises
            out["database"] = f"unreachable: {type(exc).__name__}"
        try:
            with self.gateway.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            out["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001
            out["broker"] = f"unreachable: {type(exc).__name__}"
        return out

    def flush_shed(self) -> None:
        """Add this process's new refusals to the shared tally (blocking; best effort)."""
        if self.shedder is None or self.tally is None:
            return
        try:
            self.tally.flush(self.shedder.state().shed)
        except Exception as exc:  # noqa: BLE001 - a count, not a request: the next flush retries
            log.debug("could not add refusals to the shared tally: %s", exc)

    async def close(self) -> None:
        """Release connections and threads."""
        self.flush_shed()
        if self.tally is not None:
            self.tally.client.close()
        self.waiter.close()
        await self.jobs.close()
        if self.tokens is not None:
            await self.tokens.close()
        if self.counter is not None:
            await self.counter.close()
        self.gateway.close()
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()


def shedder_for(settings: Settings) -> LoadShedder | None:
    """The load shedder ``settings.shedding`` describes, or None when it is off."""
    shed = settings.shedding
    if not shed.enabled:
        return None
    return LoadShedder(target_wait_ms=shed.target_wait_ms, interval_s=shed.interval_ms / 1000,
                       max_inflight=shed.max_inflight,
                       min_inflight=min(shed.min_inflight, shed.max_inflight))
