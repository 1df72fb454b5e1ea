"""Front-door load shedding: cap requests in flight by the queue wait their predecessors saw.

Past the workers' capacity a queue only grows: every request waits longer, callers time out,
and workers then pay providers for answers nobody reads, so the answered rate collapses. The
signal is the queue wait each answer reports (``Timings.queued_ms``: enqueue to worker start),
which, unlike total latency, does not grow with long generations. As in CoDel, a burst is fine
and a *standing* queue is not: when even the shortest wait seen over an interval is above the
target, the in-flight limit is cut below what is in flight; when it is back under the target,
the limit grows again. A wait is only known when its request ends, so answers to requests let
in before the last cut describe the queue as it was: they never cut again (one cut per round
trip, as TCP halves its window once per loss event), or the limit would collapse while the
old queue drains. Requests over the limit are refused at once (503, ``overloaded``), before
any budget is reserved, so the answered rate holds at what the workers can do.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.domain.errors import Overloaded


@dataclass(frozen=True)
class ShedState:
    """What the shedder stands at, for health reports."""

    limit: int
    inflight: int
    shed: int
    last_min_wait_ms: float | None

    def as_json(self) -> dict[str, Any]:
        """JSON-safe (a wait of infinity, every answer timed out, has no JSON number)."""
        wait = self.last_min_wait_ms
        return {"limit": self.limit, "inflight": self.inflight, "shed": self.shed,
                "last_min_wait_ms": wait if wait is None or math.isfinite(wait) else None}


class LoadShedder:
    """Admit or refuse queued interactive requests in one front-door process (thread-safe)."""

    def __init__(self, *, target_wait_ms: float = 100.0, interval_s: float = 0.5,
                 max_inflight: int = 2048, min_inflight: int = 8, cut: float = 0.75,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < cut < 1 or min_inflight < 1 or max_inflight < min_inflight:
            raise ValueError("need 0 < cut < 1 and 1 <= min_inflight <= max_inflight")
        self.target_wait_ms, self.interval_s = target_wait_ms, interval_s
        self.max_inflight, self.min_inflight, self.cut = max_inflight, min_inflight, cut
        self._clock = clock
        self._lock = threading.Lock()
        self._limit = float(max_inflight)
        self._inflight = 0
        self._shed = 0
        self._window_start = clock()
        self._window_min = math.inf
        self._samples = 0
        #: The most requests in flight at once this interval: what a cut is taken from (the
        #: count at the interval's end may be a lull).
        self._peak = 0
        #: When the limit was last cut; answers this interval to requests let in since then.
        self._cut_at = -math.inf
        self._fresh = 0
        self._last_min: float | None = None

    def check(self) -> None:
        """Raise Overloaded if a request would be refused now, without admitting it: lets a
        front door refuse before it spends CPU parsing a body it would refuse anyway."""
        self._admit(count=False)

    def enter(self) -> float:
        """Count one more request in flight, or raise Overloaded when over the limit; returns
        the admission time, for :meth:`exit`."""
        return self._admit(count=True)

    def _admit(self, *, count: bool) -> float:
        with self._lock:
            self._tick()
            limit = int(self._limit)
            if self._inflight < limit:
                if count:
                    self._inflight += 1
                    self._peak = max(self._peak, self._inflight)
                return self._clock()
            self._shed += 1
        raise Overloaded(
            f"the workers are behind (queue waits above {self.target_wait_ms:g} ms), so this "
            f"front door holds {limit} requests in flight and refused this one before "
            "reserving budget or queuing it; retry after a second, or add workers",
            retry_after=1.0)

    def exit(self, queued_ms: float | None, admitted_at: float | None = None) -> None:
        """A request admitted by :meth:`enter` (at ``admitted_at``, what it returned) ended;
        ``queued_ms`` is the queue wait it saw (``math.inf`` when it timed out or was dropped
        past its deadline; None: unknown)."""
        with self._lock:
            self._inflight = max(0, self._inflight - 1)
            if queued_ms is not None:
                self._window_min = min(self._window_min, queued_ms)
                self._samples += 1
                if admitted_at is None or admitted_at >= self._cut_at:
                    self._fresh += 1
            self._tick()

    def state(self) -> ShedState:
        """A snapshot of the limit and counts."""
        with self._lock:
            return ShedState(int(self._limit), self._inflight, self._shed, self._last_min)

    def _tick(self) -> None:
        now = self._clock()
        if now - self._window_start < self.interval_s:
            return
        if self._samples:  # no answers this interval: nothing learned
            self._last_min = self._window_min
            if self._window_min <= self.target_wait_ms:
                self._limit = min(float(self.max_inflight),
                                  self._limit + max(1.0, self._limit / 4))
            elif self._fresh:
                # A standing queue, seen by requests let in since the last cut: admit fewer
                # than were in flight at this interval's peak, so it drains.
                self._limit = max(float(self.min_inflight),
                                  min(self._limit, float(self._peak)) * self.cut)
                self._cut_at = now
        self._window_start, self._window_min, self._samples, self._fresh = now, math.inf, 0, 0
        self._peak = self._inflight
