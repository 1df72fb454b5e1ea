"""At most N of a lane's requests in the engine at once; the rest wait here, in arrival order.

vLLM's scheduler admits no waiting request, whatever its priority, while every one of its
``max_num_seqs`` slots runs; it preempts by priority only for KV blocks. An async backlog
that filled every slot would hold interactive requests until async ones finished, so the
async lane goes through a gate that keeps some slots for them (``GpuSettings.async_slots``).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from collections.abc import Sequence

from workers.gpu.batcher import Future, Sink, link, settle
from workers.gpu.engine_io import EngineOutput, EngineRequest


class SlotGate:
    """A :data:`~workers.gpu.batcher.Sink` that sends at most ``slots`` requests at a time to
    ``sink`` and each waiting one as a slot frees; a waiter cancelled first is never sent."""

    def __init__(self, sink: Sink, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._sink = sink
        self.slots = slots
        self._lock = threading.Lock()
        self._waiting: deque[tuple[EngineRequest, Future[EngineOutput]]] = deque()
        self._running = 0

    def __call__(self, requests: Sequence[EngineRequest]) -> list[Future[EngineOutput]]:
        """One future per request, in order; as many as fit go to the engine now."""
        out: list[Future[EngineOutput]] = [Future() for _ in requests]
        with self._lock:
            self._waiting.extend(zip(requests, out, strict=True))
            ready = self._take()
        self._send(ready)
        return out

    def in_engine(self) -> int:
        """Requests of this lane the engine holds now."""
        with self._lock:
            return self._running

    def waiting(self) -> int:
        """Requests waiting here for a slot."""
        with self._lock:
            return len(self._waiting)

    def _take(self) -> list[tuple[EngineRequest, Future[EngineOutput]]]:
        # Under the lock: claim a slot for each waiter that fits.
        ready = []
        while self._waiting and self._running < self.slots:
            req, fut = self._waiting.popleft()
            if fut.cancelled():
                continue  # its caller gave up while it waited: it costs no slot
            self._running += 1
            ready.append((req, fut))
        return ready

    def _send(self, ready: list[tuple[EngineRequest, Future[EngineOutput]]]) -> None:
        if not ready:
            return
        try:
            engine_futures = self._sink([req for req, _ in ready])
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn why
            for _, fut in ready:
                settle(fut, exc)
            self._release(len(ready))
            return
        for (_, fut), engine_fut in zip(ready, engine_futures, strict=True):
            link(engine_fut, fut)
            engine_fut.add_done_callback(self._one_done)

    def _one_done(self, _: concurrent.futures.Future[EngineOutput]) -> None:
        self._release(1)

    def _release(self, n: int) -> None:
        with self._lock:
            self._running -= n
            ready = self._take()
        self._send(ready)
