"""Spend queries over the ledger: grouped lines with their savings, exports, latency."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, and_, case, func, select
from sqlalchemy.orm import Session

from models.db.embedding_rows import CACHED_PART_SUFFIX
from models.db.tables import LedgerRow
from models.domain.errors import LedgerError


@dataclass(frozen=True)
class SpendLine:
    """Spend of one group: requests, cost, baseline and savings."""

    key: tuple[str, ...]
    requests: int
    cache_hits: int
    cost: Decimal
    baseline_cost: Decimal
    input_tokens: int
    output_tokens: int
    list_cost: Decimal = Decimal(0)
    #: Baseline of the requests answered from the response cache.
    hit_baseline: Decimal = Decimal(0)
    cache_read_tokens: int = 0
    #: Requests whose static part carried volatile content (uncacheable prefix).
    volatile_prefix: int = 0
    #: The part of ``cost`` charged at an estimate (attempts whose bill is unknown).
    estimated_cost: Decimal = Decimal(0)
    #: Provider attempts behind these requests (retries, fallbacks, runs).
    attempts: int = 0
    #: Reasoning tokens (already inside ``output_tokens``, billed at the output price).
    reasoning_tokens: int = 0

    @property
    def saved(self) -> Decimal:
        """Baseline minus cost: what every lever together saved."""
        return self.baseline_cost - self.cost

    @property
    def saved_by_response_cache(self) -> Decimal:
        """Requests answered from the response cache cost nothing: their whole baseline."""
        return self.hit_baseline

    @property
    def saved_by_routing(self) -> Decimal:
        """Flagship list price minus the routed model's list price, same tokens."""
        return self.baseline_cost - self.hit_baseline - self.list_cost

    @property
    def saved_by_prompt_caching(self) -> Decimal:
        """The routed model's list price minus what was paid (cache reads, batch discount)."""
        return self.list_cost - self.cost


_GROUPS = {"feature": LedgerRow.feature, "team": LedgerRow.team, "user": LedgerRow.user,
           "model": LedgerRow.model, "lane": LedgerRow.lane, "tier": LedgerRow.tier,
           "provider": LedgerRow.provider, "org": LedgerRow.org, "outcome": LedgerRow.outcome,
           "kind": LedgerRow.kind, "task_type": LedgerRow.task_type, "rung": LedgerRow.rung,
           # Rows from before deployments (and cache hits) went through their provider.
           "deployment": case((LedgerRow.deployment == "", LedgerRow.provider),
                              else_=LedgerRow.deployment),
           "purpose": LedgerRow.purpose}


def spend_by(session: Session, *groups: str, since: datetime | None = None,
             team: str | None = None) -> list[SpendLine]:
    """Spend grouped by any of feature, team, user, model, lane, tier, provider, org, outcome,
    kind, task_type, rung, deployment."""
    return spend_lines(session, *groups, since=since, team=team)


#: Time buckets ``spend_lines`` can group by, besides the columns of ``_GROUPS``.
TIME_GROUPS = ("day", "hour")


def spend_lines(session: Session, *groups: str, since: datetime | None = None,
                until: datetime | None = None, team: str | None = None,
                request_id_prefix: str | None = None) -> list[SpendLine]:
    """Like :func:`spend_by`, plus ``day``/``hour`` buckets (UTC), an upper bound and an id prefix.

    Time buckets come back as ``YYYY-MM-DD`` / ``YYYY-MM-DD HH:00`` strings and sort before
    cost, so a chart over time reads its lines in order.
    """
    bad = [g for g in groups if g not in _GROUPS and g not in TIME_GROUPS]
    if bad:
        raise LedgerError(f"cannot group spend by {bad}; use any of "
                          f"{', '.join([*_GROUPS, *TIME_GROUPS])}")
    dialect = session.get_bind().dialect.name
    cols = [_time_bucket(g, dialect) if g in TIME_GROUPS else _GROUPS[g] for g in groups]
    tokens_in = (LedgerRow.input_uncached + LedgerRow.cache_read + LedgerRow.cache_write_5m
                 + LedgerRow.cache_write_1h)
    hit_base = case((LedgerRow.outcome == "cache_hit", LedgerRow.baseline_cost), else_=None)
    # Shadow and judge rows are spend, never savings: their baseline and list price are what
    # they cost (workers.shadow; the quality guard's measurements, not routed traffic).
    serving = LedgerRow.purpose == "serve"
    baseline = case((serving, LedgerRow.baseline_cost), else_=LedgerRow.cost)
    listed = case((serving, LedgerRow.list_cost), else_=LedgerRow.cost)
    # A partly cached embedding request has two rows (its sent part, its cached part): the
    # cached part's money and tokens count, but not as a request or a whole-request hit.
    part = and_(LedgerRow.kind == "embedding", LedgerRow.outcome == "cache_hit",
                LedgerRow.request_id.like(f"%{CACHED_PART_SUFFIX}"))
    stmt = select(*cols, func.coalesce(func.sum(case((part, 0), else_=1)), 0),
                  func.sum(case((part, 0), else_=func.cast(LedgerRow.cache_hit, Integer))),
                  func.coalesce(func.sum(LedgerRow.cost), 0),
                  func.coalesce(func.sum(baseline), 0),
                  func.coalesce(func.sum(tokens_in), 0),
                  func.coalesce(func.sum(LedgerRow.output), 0),
                  func.coalesce(func.sum(listed), 0),
                  func.coalesce(func.sum(hit_base), 0),
                  func.coalesce(func.sum(LedgerRow.cache_read), 0),
                  func.sum(func.cast(LedgerRow.volatile_prefix, Integer)),
                  func.coalesce(func.sum(LedgerRow.estimated_cost), 0),
                  func.coalesce(func.sum(LedgerRow.attempts), 0),
                  func.coalesce(func.sum(LedgerRow.reasoning), 0))
    stmt = filtered(stmt, since=since, until=until, team=team, prefix=request_id_prefix)
    if cols:
        timed = [c for g, c in zip(groups, cols) if g in TIME_GROUPS]
        stmt = stmt.group_by(*cols).order_by(*timed, func.sum(LedgerRow.cost).desc())
    n = len(cols)
    return [SpendLine(key=tuple(str(v) for v in row[:n]), requests=int(row[n]),
                      cache_hits=int(row[n + 1] or 0), cost=Decimal(row[n + 2]),
                      baseline_cost=Decimal(row[n + 3]), input_tokens=int(row[n + 4]),
                      output_tokens=int(row[n + 5]), list_cost=Decimal(row[n + 6]),
                      hit_baseline=Decimal(row[n + 7] or 0), cache_read_tokens=int(row[n + 8]),
                      volatile_prefix=int(row[n + 9] or 0),
                      estimated_cost=Decimal(row[n + 10]), attempts=int(row[n + 11]),
                      reasoning_tokens=int(row[n + 12]))
            for row in session.execute(stmt)]


def iter_rows(session: Session, *, since: datetime | None = None, until: datetime | None = None,
              team: str | None = None, batch: int = 1000) -> Iterator[LedgerRow]:
    """Every ledger row in the window, oldest first, streamed ``batch`` rows at a time."""
    stmt = filtered(select(LedgerRow), since=since, until=until, team=team, prefix=None)
    yield from session.scalars(stmt.order_by(LedgerRow.id).execution_options(yield_per=batch))


def export_columns() -> list[str]:
    """Ledger attribute names in table order, as exports write them (``user``, not ``user_id``)."""
    from sqlalchemy import inspect

    return [attr.key for attr in inspect(LedgerRow).column_attrs]


def filtered(stmt: Any, *, since: datetime | None = None, until: datetime | None = None,
             team: str | None = None, prefix: str | None = None) -> Any:
    """``stmt`` over ledger rows of the window, the team and the request id prefix given."""
    if since is not None:
        stmt = stmt.where(LedgerRow.created_at >= since)
    if until is not None:
        stmt = stmt.where(LedgerRow.created_at < until)
    if team is not None:
        stmt = stmt.where(LedgerRow.team == team)
    if prefix is not None:
        # Prefixes are ours (replay run ids), never user input with LIKE wildcards in them.
        stmt = stmt.where(LedgerRow.request_id.startswith(prefix, autoescape=True))
    return stmt


def _time_bucket(unit: str, dialect: str) -> Any:
    if dialect == "postgresql":
        utc = func.timezone("UTC", LedgerRow.created_at)
        return func.to_char(utc, "YYYY-MM-DD" if unit == "day" else "YYYY-MM-DD HH24:00")
    # SQLite keeps the UTC wall time as text; strftime reads it as is.
    return func.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:00", LedgerRow.created_at)


def latency_histogram(session: Session, bounds: tuple[float, ...], *, group: str = "lane",
                      outcome: str = "ok") -> dict[str, tuple[list[int], int, float]]:
    """Per ``group`` value: cumulative row counts at or under each bound (ms), count and sum.

    Only rows of ``outcome`` count: a cache-hit row carries the timings of the answer it
    reused, not the time the hit took.
    """
    col = _GROUPS[group]
    buckets = [func.sum(case((LedgerRow.latency_ms <= b, 1), else_=0)) for b in bounds]
    stmt = (select(col, *buckets, func.count(), func.coalesce(func.sum(LedgerRow.latency_ms), 0))
            .where(LedgerRow.outcome == outcome).group_by(col))
    n = len(bounds)
    return {str(row[0]): ([int(v or 0) for v in row[1:n + 1]], int(row[n + 1]),
                          float(row[n + 2])) for row in session.execute(stmt)}
