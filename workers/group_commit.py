"""Group commit: writes that arrive together from many threads go to the database as one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class Failed:
    """A result of ``write_many`` for an item that failed alone (its own statement, after
    others of the batch were committed): that caller's error, the others' results stand."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class GroupCommit(Generic[T, R]):
    """Each caller's ``submit`` returns its own item's result, as if it had written alone.

    Nobody waits for a window: the first caller writes at once; whoever arrives while that
    write is in flight queues, and the next caller to find the writer free writes everything
    queued in one go (``write_many``, up to ``max_items``). Alone, a write is ``write_one``,
    exactly as before; a GPU worker's burst of 32 requests costs a few statements instead of
    32 (each one a pooled connection, a round trip and the worker's CPU that the engine
    needs). A batch that fails with an error ``alone_after`` accepts (the database refused
    the statement: nothing was written) is written again one item at a time, so one bad item
    fails only its own caller; any other error (the connection broke: the batch may have been
    written) is every caller's, as it would have been had each written alone.
    """

    def __init__(self, write_one: Callable[[T], R],
                 write_many: Callable[[Sequence[T]], Sequence[R]], *,
                 max_items: int = 64, writers: int = 1,
                 alone_after: Callable[[BaseException], bool] = lambda _exc: True) -> None:
        self._one = write_one
        self._many = write_many
        self._alone_after = alone_after
        self._max = max(max_items, 1)
        #: Batches in flight at once: 2 for a durable write, so a batch does not wait out the
        #: previous one's flush to disk (the server groups concurrent flushes itself).
        self._writers = max(writers, 1)
        self._cond = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._busy = 0
        #: Sizes of the recent batches (tests and the benchmark's notes), newest last.
        self.sizes: list[int] = []

    def submit(self, item: T) -> R:
        """Write ``item`` (alone or with whatever else is queued) and return its result."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._busy >= self._writers:
                    self._cond.wait()
                if slot.done:
                    break
                if slot not in self._queue:  # in a batch being written: wait for it
                    while not slot.done:
                        self._cond.wait()
                    break
                self._busy += 1
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
            # the oldest items went first: this caller's may still be queued
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _write(self, batch: list[_Slot[T, R]]) -> None:
        self.sizes = (self.sizes + [len(batch)])[-100:]
        if len(batch) > 1:
            try:
                results = list(self._many([s.item for s in batch]))
                if len(results) != len(batch):
                    raise RuntimeError("write_many returned a result count that does not match")
            except BaseException as exc:  # noqa: BLE001 - each caller learns its own outcome
                if not self._alone_after(exc):
                    for s in batch:
                        s.error, s.done = exc, True
                    return
                results = None
            if results is not None:
                for s, r in zip(batch, results, strict=True):
                    if isinstance(r, Failed):
                        s.error = r.error
                    else:
                        s.result = r
                    s.done = True
                return
        for s in batch:
            try:
                s.result = self._one(s.item)
            except BaseException as exc:  # noqa: BLE001 - it is this caller's to raise
                s.error = exc
            s.done = True
