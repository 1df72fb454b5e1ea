"""Write response-cache hits to the ledger (cost 0, the no-lever cost saved), off the hot path."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.db import ledger
from models.domain.catalogue import load_catalogue
from models.domain.cost import baseline_cost
from models.domain.errors import LedgerError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult, Timings
from models.domain.settings import Settings
from scheduler.route import baseline_model

log = logging.getLogger(__name__)


class CacheHitRecorder:
    """Called by the Gateway for each hit: builds the hit's row and queues it for the ledger.

    A hit must answer in well under a millisecond, and a synchronous database commit costs
    several: rows go to a background thread that writes them in batches (one commit per
    batch, flushed every ``interval_s`` and at exit). A crash can lose the last batch of $0
    rows; that understates savings and never misstates spend.
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], *,
                 interval_s: float = 0.05, batch: int = 200) -> None:
        self.sessions = sessions
        catalogue = load_catalogue(settings.prices_path)
        self.version = catalogue.version
        self.baseline = baseline_model(catalogue, settings.routing)
        self.interval_s = interval_s
        self.batch = batch
        self.failures = 0
        self.written = 0
        self._rows: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def __call__(self, request: ChatRequest, hit: ChatResult) -> ChatResult:
        """Queue ``hit``'s ledger row and return the result as the caller should see it."""
        result = hit.model_copy(update={
            "request_id": request.request_id, "cache_hit": True, "cost": Decimal(0),
            "list_cost": Decimal(0), "baseline_cost": baseline_cost(hit.usage, self.baseline),
            "price_version": self.version, "timings": Timings()})
        row = ledger.row_from_result(request, result, outcome="cache_hit",
                                     now=datetime.now(timezone.utc))
        self.put_row(row)
        return result

    def put_row(self, row: dict[str, Any]) -> None:
        """Queue a ledger row built elsewhere (an embedding request's cached items)."""
        self._idle.clear()
        self._rows.put(row)
        self._ensure_thread()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written (tests, shutdown); False on timeout."""
        if self._rows.empty() and self._idle.is_set():
            return True
        return self._idle.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sluice-hit-ledger",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            rows = [self._rows.get()]
            try:
                while len(rows) < self.batch:
                    rows.append(self._rows.get(timeout=self.interval_s))
            except queue.Empty:
                pass
            self._write(rows)
            if self._rows.empty():
                self._idle.set()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            with self.sessions() as s:
                for row in rows:
                    ledger.record(s, row)
                s.commit()
            self.written += len(rows)
        except (LedgerError, Exception) as exc:  # noqa: BLE001 - a writer thread must not die
            self.failures += len(rows)
            log.warning("could not write %d cache-hit ledger rows: %s", len(rows), exc)
