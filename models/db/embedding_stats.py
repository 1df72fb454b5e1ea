"""Per-feature figures of the embedding item cache, from the ledger's ``kind = embedding`` rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from models.db.spend import filtered
from models.db.tables import LedgerRow
from models.domain.budget import qualified


@dataclass(frozen=True)
class ItemStats:
    """One feature's embedding items: how many, how many came from the cache, what it saved.
    ``feature`` is named ``org/feature`` unless the org is the default one (each org's
    features are its own)."""

    feature: str
    items: int
    cached: int
    tokens_saved: int
    saved: Decimal
    cost: Decimal
    org: str = "default"

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (money as strings)."""
        return {"org": self.org, "feature": self.feature, "items": self.items,
                "cached": self.cached,
                "hit_rate": round(self.cached / self.items, 4) if self.items else 0.0,
                "tokens_saved": self.tokens_saved, "saved": str(self.saved),
                "cost": str(self.cost)}


def by_feature(session: Session, *, since: datetime | None = None,
               until: datetime | None = None, team: str | None = None) -> list[ItemStats]:
    """Items embedded per (org, feature) and the part the item cache answered (its list price
    saved)."""
    hit = LedgerRow.outcome == "cache_hit"
    stmt = (select(LedgerRow.org, LedgerRow.feature, func.coalesce(func.sum(LedgerRow.items), 0),
                   func.coalesce(func.sum(case((hit, LedgerRow.items), else_=0)), 0),
                   func.coalesce(func.sum(case((hit, LedgerRow.input_uncached), else_=0)), 0),
                   func.coalesce(func.sum(case((hit, LedgerRow.baseline_cost), else_=0)), 0),
                   func.coalesce(func.sum(LedgerRow.cost), 0))
            .where(LedgerRow.kind == "embedding", LedgerRow.outcome.in_(("ok", "cache_hit")))
            .group_by(LedgerRow.org, LedgerRow.feature)
            .order_by(LedgerRow.org, LedgerRow.feature))
    stmt = filtered(stmt, since=since, until=until, team=team)
    return [ItemStats(feature=qualified(str(r[0]), str(r[1])),
                      items=int(r[2]), cached=int(r[3]), tokens_saved=int(r[4]),
                      saved=Decimal(r[5]), cost=Decimal(r[6]), org=str(r[0]))
            for r in session.execute(stmt)]
