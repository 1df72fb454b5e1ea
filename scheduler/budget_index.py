"""Which budgets apply to a request: the budget list, cached briefly, by request key."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.db.budgets import BudgetRow
from models.domain.budget import request_keys
from models.domain.request import ChatRequest
from scheduler.governor import unreachable

#: (org, scope, key) -> [(budget id, when its window resets)]
Index = dict[tuple[str, str, str], list[tuple[int, datetime | None]]]


class BudgetIndex:
    """The ids of the budgets a request falls under; limits and usage are never cached here
    (the reserving statement reads them under a row lock), only which budgets exist."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._index: Index = {}
        self._loaded_at = float("-inf")
        self._ever_loaded = False

    def refs(self, request: ChatRequest) -> list[tuple[int, datetime | None]]:
        """The request's budgets, each with its reset time (a window past it must roll first)."""
        if time.monotonic() - self._loaded_at > self.ttl_s:
            # Callers may hold a pooled connection (a worker's final write settles inside its
            # ledger transaction): were they all to wait here while the one reloading waits for
            # a connection, the pool would deadlock until its timeout (30 s; seen when a packed
            # embedding call's members all finished at once). So only a first load blocks;
            # later, one thread reloads and the others read the index it replaces.
            if self._lock.acquire(blocking=not self._ever_loaded):
                try:
                    if time.monotonic() - self._loaded_at > self.ttl_s:
                        self._reload()
                finally:
                    self._lock.release()
        return [ref for k in request_keys(request) for ref in self._index.get(k, ())]

    def refresh(self) -> None:
        """Reload now, waiting for a reload in progress (it may have read the budgets before
        a change this process just committed, and would otherwise be the list in use)."""
        with self._lock:
            self._reload()

    def invalidate(self) -> None:
        """Forget the cached list (after budgets changed in this process)."""
        self._loaded_at = float("-inf")

    def _reload(self) -> None:
        """Read the list and put it in use (the caller holds ``_lock``)."""
        self._index = self._load()
        self._loaded_at = time.monotonic()
        self._ever_loaded = True

    def _load(self) -> Index:
        try:
            with self.sessions() as s:
                rows = s.execute(select(BudgetRow.id, BudgetRow.org, BudgetRow.scope,
                                        BudgetRow.key, BudgetRow.resets_at)).all()
        except SQLAlchemyError as exc:
            raise unreachable(exc, "read the budgets") from exc
        # Keyed by (org, scope, key), as request_keys() names a request's budgets.
        index: Index = {}
        for bid, org, scope, key, resets in rows:
            resets = None if resets is None else (resets if resets.tzinfo
                                                  else resets.replace(tzinfo=timezone.utc))
            index.setdefault((org, scope, key), []).append((bid, resets))
        return index
