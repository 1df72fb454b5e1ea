"""The async lane's gatherer: hold requests up to a timeout or a size, then send them together."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from workers.gpu.engine_io import EngineOutput, EngineRequest

T = TypeVar("T")
Future = concurrent.futures.Future
#: Hands one gathered batch to the engine; returns one future per request, in order.
Sink = Callable[[Sequence[EngineRequest]], Sequence["Future[EngineOutput]"]]


class BatchWindow(Generic[T]):
    """The pure rule: a window opens at the first item and closes at ``timeout_s`` or ``max_items``.

    No threads, no clock of its own: callers pass ``now``, so tests drive it with a fake clock.
    """

    def __init__(self, timeout_s: float, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.timeout_s = max(timeout_s, 0.0)
        self.max_items = max_items
        self._items: list[T] = []
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def deadline(self) -> float | None:
        """When the open window must be sent, or None when it is empty."""
        return None if self._opened_at is None else self._opened_at + self.timeout_s

    def add(self, item: T, now: float) -> list[T] | None:
        """Add ``item``; return the batch when this item fills the window or it is already due."""
        if self._opened_at is None:
            self._opened_at = now
        self._items.append(item)
        if len(self._items) >= self.max_items or self.timeout_s == 0:
            return self.take()
        return self.due(now)

    def due(self, now: float) -> list[T] | None:
        """The batch if its deadline has passed, else None."""
        deadline = self.deadline
        return self.take() if deadline is not None and now >= deadline else None

    def take(self) -> list[T]:
        """Empty the window and return what it held."""
        items, self._items, self._opened_at = self._items, [], None
        return items


class LaneBatcher:
    """Gathers async-lane requests and hands each batch to ``sink`` (the engine) in one go.

    ``submit`` returns at once with a future that completes when the engine answers. A
    background thread sends a window when its timeout passes; ``autostart=False`` leaves that
    to explicit :meth:`poll` calls (tests with a fake clock).
    """

    def __init__(self, sink: Sink, *, batch_timeout_ms: float, batch_max: int,
                 clock: Callable[[], float] = time.monotonic, autostart: bool = True,
                 name: str = "async") -> None:
        self._sink = sink
        self._clock = clock
        self._window: BatchWindow[tuple[EngineRequest, Future[EngineOutput]]] = BatchWindow(
            batch_timeout_ms / 1000.0, batch_max)
        self._cond = threading.Condition()
        self._closed = False
        self._autostart = autostart
        self._thread: threading.Thread | None = None
        self.name = name
        #: Sizes of the most recent batches sent, newest last (health and tests).
        self.batch_sizes: deque[int] = deque(maxlen=1000)

    @property
    def sink(self) -> Sink:
        """Where each gathered batch goes (the engine, or a slot gate before it)."""
        return self._sink

    def submit(self, request: EngineRequest) -> Future[EngineOutput]:
        """Add ``request`` to the open window; the future resolves with the engine's output."""
        fut: Future[EngineOutput] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.name} lane batcher is closed")
            ready = self._window.add((request, fut), self._clock())
            if ready is None:
                self._ensure_thread()
                self._cond.notify()
        if ready is not None:
            self._send(ready)
        return fut

    def poll(self) -> int:
        """Send the open window if it is due; return how many requests went out."""
        with self._cond:
            ready = self._window.due(self._clock())
        if ready:
            self._send(ready)
        return len(ready or ())

    def flush(self) -> int:
        """Send whatever is waiting now, due or not."""
        with self._cond:
            ready = self._window.take()
        if ready:
            self._send(ready)
        return len(ready)

    def close(self) -> None:
        """Send what is waiting and stop the background thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def pending(self) -> int:
        """Requests waiting in the open window."""
        with self._cond:
            return len(self._window)

    def _ensure_thread(self) -> None:
        if self._autostart and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sluice-{self.name}-batcher",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    deadline = self._window.deadline
                    if deadline is not None and self._clock() >= deadline:
                        break
                    self._cond.wait(None if deadline is None else deadline - self._clock())
                if self._closed:
                    return
                ready = self._window.take()
            self._send(ready)

    def _send(self, batch: list[tuple[EngineRequest, Future[EngineOutput]]]) -> None:
        # A caller that gave up before the window closed does not cost an engine slot.
        live = [(req, fut) for req, fut in batch if not fut.cancelled()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            engine_futures = self._sink([req for req, _ in live])
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn why
            for _, fut in live:
                settle(fut, exc)
            return
        for (_, fut), engine_fut in zip(live, engine_futures, strict=True):
            link(engine_fut, fut)


def link(source: Future[EngineOutput], target: Future[EngineOutput]) -> None:
    """Copy ``source``'s outcome into ``target``; cancelling ``target`` cancels ``source``."""
    def _forward(src: Future[EngineOutput]) -> None:
        if src.cancelled():
            target.cancel()
        else:
            exc = src.exception()
            settle(target, exc) if exc is not None else _set(target, src.result())

    def _backward(tgt: Future[EngineOutput]) -> None:
        if tgt.cancelled():
            source.cancel()

    source.add_done_callback(_forward)
    target.add_done_callback(_backward)


def settle(fut: Future[EngineOutput], exc: BaseException) -> None:
    try:
        fut.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass  # already cancelled by its caller


def _set(fut: Future[EngineOutput], value: EngineOutput) -> None:
    try:
        fut.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass
