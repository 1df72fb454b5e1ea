"""Write a response-cache hit to the ledger: cost 0, and the no-lever cost it saved."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.orm import Session, sessionmaker

from models.db import ledger
from models.domain.catalogue import load_catalogue
from models.domain.cost import baseline_cost
from models.domain.errors import LedgerError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult
from models.domain.settings import Settings
from scheduler.route import baseline_model


class CacheHitRecorder:
    """Called by the Gateway for each hit; never fails the request over a ledger problem."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        catalogue = load_catalogue(settings.prices_path)
        self.version = catalogue.version
        self.baseline = baseline_model(catalogue, settings.routing)
        self.failures = 0

    def __call__(self, request: ChatRequest, hit: ChatResult) -> ChatResult:
        """Record ``hit`` for ``request`` and return the result as the caller should see it."""
        result = hit.model_copy(update={
            "request_id": request.request_id, "cache_hit": True, "cost": 0, "list_cost": 0,
            "baseline_cost": baseline_cost(hit.usage, self.baseline),
            "price_version": self.version})
        row = ledger.row_from_result(request, result, outcome="cache_hit",
                                     now=datetime.now(timezone.utc))
        try:
            with self.sessions() as s:
                ledger.record(s, row)
                s.commit()
        except LedgerError:
            # The answer is already paid for; losing its $0 row only understates savings.
            self.failures += 1
        return result
