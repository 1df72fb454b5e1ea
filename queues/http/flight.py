"""An interactive request's place in the shedder's count, from admission to its end."""

from __future__ import annotations

import time
from collections.abc import Callable

from models.domain.errors import DeadlineExceeded
from models.domain.request import ChatRequest
from models.domain.result import ChatResult
from queues.http.waiter import ResultWaiter, Watch
from scheduler.shedding import LoadShedder


class Flight:
    """Counts a request in flight from its admission (a cache hit is never admitted) until
    :meth:`end`, reporting the queue wait it saw."""

    def __init__(self, shedder: LoadShedder | None) -> None:
        self.shedder = shedder
        self.began = time.monotonic()
        self.waited: float | None = None
        self._admitted: float | None = None

    @property
    def admit(self) -> Callable[[ChatRequest], None] | None:
        """The Gateway's admission hook (None when this door does not shed)."""
        return self._admit if self.shedder is not None else None

    def _admit(self, _request: ChatRequest) -> None:
        assert self.shedder is not None
        self._admitted = self.shedder.enter()  # raises Overloaded past the limit

    def answered(self, result: ChatResult) -> None:
        """The queue wait by this process's clock alone (round trip less the worker's own
        time), so a clock skew between hosts cannot fake or hide a standing queue."""
        self.waited = max(0.0, (time.monotonic() - self.began) * 1000
                          - (result.timings.provider_ms if result.timings else 0.0))

    def dropped(self, err: DeadlineExceeded) -> None:
        """The worker dropped it: the queue outlasted the caller, and says by how much."""
        found = err.details.get("waited_ms")
        self.waited = float(found) if isinstance(found, (int, float)) else None

    async def wait(self, waiter: ResultWaiter, watch: Watch, timeout: float) -> ChatResult:
        """The watched result (or its typed error), noting the queue wait it reports."""
        try:
            result = await waiter.wait(watch, timeout)
        except DeadlineExceeded as err:
            self.dropped(err)
            raise
        self.answered(result)
        return result

    def end(self) -> None:
        """Leave the count, once (a ResultTimeout leaves the wait unknown: the request may
        have been running all along)."""
        if self._admitted is not None and self.shedder is not None:
            self.shedder.exit(self.waited, self._admitted)
            self._admitted = None
