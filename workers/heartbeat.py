"""Heartbeats: a worker keeps the claims and reservations of its live runs from expiring."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models.db.budgets import ReservationRow
from models.db.tables import LedgerRow

log = logging.getLogger("sluice.heartbeat")
#: A claim is stale (its worker dead) after this many missed heartbeats.
CLAIM_TTL_BEATS = 6


@dataclass
class Beat:
    """One live run: its request, and the reservation it holds (which may change mid-run)."""

    request_id: str
    lane: str
    reservation_id: str | None


class Heartbeat:
    """One thread per worker process renews every live run every ``interval_s``.

    Leases used to assume Celery's time limits, which the threads pool does not enforce: a
    slow call outlived its reservation (the governor freed the money, others spent it) and its
    claim (another delivery took it over and paid again). Now only a stopped heartbeat, that
    is a dead worker, lets either lapse.
    """

    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float,
                 lease: Callable[[str], timedelta],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.sessions = sessions
        self.interval_s = interval_s
        self.lease = lease
        self.clock = clock
        self._live: dict[int, Beat] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def claim_ttl_s(self) -> float:
        """Seconds without a heartbeat after which a claim is a dead worker's."""
        return self.interval_s * CLAIM_TTL_BEATS

    def hold(self, request_id: str, lane: str, reservation_id: str | None) -> Beat:
        """Start renewing this run; ``drop`` it when the run ends."""
        beat = Beat(request_id, lane, reservation_id)
        with self._lock:
            self._live[id(beat)] = beat
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="sluice-heartbeat")
                self._thread.start()
        return beat

    def drop(self, beat: Beat) -> None:
        """Stop renewing ``beat``'s run."""
        with self._lock:
            self._live.pop(id(beat), None)

    def live(self) -> list[Beat]:
        """The runs being renewed."""
        with self._lock:
            return list(self._live.values())

    def beat_once(self) -> int:
        """Renew every live run now (one transaction); returns how many claims were renewed."""
        beats = self.live()
        if not beats:
            return 0
        now = self.clock()
        with self.sessions() as s:
            renewed = s.execute(update(LedgerRow)
                                .where(LedgerRow.request_id.in_([b.request_id for b in beats]),
                                       LedgerRow.outcome == "running")
                                .values(heartbeat_at=now)).rowcount
            for lane in {b.lane for b in beats}:
                ids = [b.reservation_id for b in beats if b.lane == lane and b.reservation_id]
                if ids:
                    s.execute(update(ReservationRow)
                              .where(ReservationRow.id.in_(ids), ReservationRow.state == "open")
                              .values(expires_at=now + self.lease(lane)))
            s.commit()
        return int(renewed or 0)

    def _loop(self) -> None:
        while not self._wake.wait(self.interval_s):
            if not self.live():
                continue
            try:
                self.beat_once()
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat failed (claims may look stale if it persists): %s", exc)

    def stop(self) -> None:
        """End the thread (worker shutdown)."""
        self._wake.set()
