"""Ledger repository: idempotent writes keyed on the request id, and spend queries."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, case, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db.embedding_rows import CACHED_PART_SUFFIX
from models.db.tables import LedgerRow
from models.domain.errors import LedgerError
from models.domain.request import ChatRequest
from models.domain.result import ChatResult

_COLUMNS = {c.key for c in LedgerRow.__table__.columns} - {"id"}


def row_from_result(request: ChatRequest, result: ChatResult, *, outcome: str = "ok",
                    error_code: str | None = None, batch: bool = False,
                    prompt_hash: str = "", now: datetime | None = None) -> dict[str, Any]:
    """The ledger row (as column values) for one finished request."""
    u = result.usage
    return {
        "request_id": request.request_id,
        "created_at": now or datetime.now(timezone.utc),
        "org": request.org, "team": request.team, "feature": request.feature,
        "user": request.user, "lane": request.lane,
        "tier": result.route.tier, "provider": result.provider, "model": result.model,
        "backend": result.route.backend, "route_reason": result.route.reason[:200],
        "route_score": result.route.score,
        "task_type": result.route.task_type, "rung": result.route.rung,
        "outcome": outcome, "error_code": error_code, "cache_hit": result.cache_hit, "batch": batch,
        "input_uncached": u.input_uncached, "cache_read": u.cache_read,
        "cache_write_5m": u.cache_write_5m, "cache_write_1h": u.cache_write_1h,
        "output": u.output, "reasoning": u.reasoning,
        "cost": result.cost, "baseline_cost": result.baseline_cost,
        "list_cost": result.list_cost,
        "price_version": result.price_version,
        "latency_ms": result.timings.total_ms, "queued_ms": result.timings.queued_ms,
        "provider_ms": result.timings.provider_ms, "prompt_hash": prompt_hash,
        "deployment": result.deployment,
        "purpose": purpose_of(request),
    }


def purpose_of(request: ChatRequest) -> str:
    """``serve``, or ``shadow``/``judge`` for the quality guard's own requests (workers.shadow)."""
    from models.domain.quality import PURPOSE_TAG

    return request.tags.get(PURPOSE_TAG, "serve")


def record(session: Session, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its request id is already there; True when this call wrote it.

    A Celery task may run twice (acks late, worker lost): the second write is a no-op, so
    the ledger never bills a request twice. The caller commits.
    """
    values = _columns(row)
    unknown = set(values) - _COLUMNS
    if unknown:
        raise LedgerError(f"ledger row has unknown columns {sorted(unknown)}; "
                          "add them to models/db/tables.py and a migration")
    try:
        res = session.execute(_insert_once(session.get_bind().dialect.name), values)
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not write ledger row {row.get('request_id')}: {exc}; "
                          "check SLUICE_DATABASE__URL and that `alembic upgrade head` ran") from exc
    return res.first() is not None


def _columns(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values keyed by column (``user`` is stored as ``user_id``)."""
    return {("user_id" if k == "user" else k): v for k, v in row.items()}


@functools.cache
def _insert_once(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING request_id``, built once.

    The values come as execute parameters, so the statement (and its compiled form) is shared
    by every write instead of being rebuilt per row on the hot path.
    """
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise LedgerError(f"the ledger supports PostgreSQL and SQLite, not {dialect}")
    table = LedgerRow.__table__
    # RETURNING, not rowcount: psycopg 3 reports rowcount -1 here, which read as "wrote it"
    # and let every duplicate delivery call (and pay) the provider again.
    return insert(table).on_conflict_do_nothing(index_elements=["request_id"]).returning(
        table.c.request_id)


def claim_fast(engine: Any, row: dict[str, Any]) -> bool:
    """Claim ``row['request_id']`` in one round trip when nobody has: True when this call did.

    ``engine`` is an autocommit engine (models.db.engine.autocommit_engine), so the INSERT is
    its own transaction. False means a row exists: ``claim`` in a session decides what it is.
    """
    now = datetime.now(timezone.utc)
    values = _columns(dict(row, outcome="running", created_at=now, heartbeat_at=now))
    try:
        with engine.connect() as conn:
            return conn.execute(_insert_once(engine.dialect.name), values).first() is not None
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not claim ledger row {row.get('request_id')}: {exc}") from exc


def claim_fast_many(engine: Any, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """:func:`claim_fast` of several rows in one INSERT (one round trip, one transaction):
    True for each row this call claimed. A request id twice in ``rows`` (two copies of a
    message arriving together) is claimed by its first row only."""
    now = datetime.now(timezone.utc)
    values = [_columns(dict(r, outcome="running", created_at=now, heartbeat_at=now))
              for r in rows]
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        first.setdefault(v["request_id"], i)
    unique = [values[i] for i in first.values()]
    if len({frozenset(v) for v in unique}) != 1:
        raise LedgerError("rows of different columns: claimed one at a time")
    try:
        with engine.connect() as conn:
            claimed = {r[0] for r in conn.execute(_insert_once(engine.dialect.name), unique)}
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not claim {len(unique)} ledger rows: {exc}") from exc
    return [first[v["request_id"]] == i and v["request_id"] in claimed
            for i, v in enumerate(values)]


def get(session: Session, request_id: str) -> LedgerRow | None:
    """The ledger row of ``request_id``, if written."""
    return session.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id)).first()


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


def _int_type() -> Any:
    from sqlalchemy import Integer

    return Integer


def claim(session: Session, row: dict[str, Any], *, lease_s: float,
          now: datetime | None = None, claim_ttl_s: float | None = None,
          sent_at: datetime | None = None) -> str:
    """Claim ``row['request_id']`` for execution before the provider is called.

    Returns ``claimed`` (go ahead), ``resumed`` (go ahead: this call took over the expired
    claim of a dead run, which may have paid a provider already), ``retried`` (go ahead, as a
    first run: the request had ended in an error), ``done`` (a previous run finished it:
    do not call the provider again), ``running`` (another run holds a live claim) or
    ``foreign`` (another tenant already used this request id). A claim whose heartbeat
    stopped ``claim_ttl_s`` ago belongs to a dead worker and can be taken over (a live run
    renews it: workers.heartbeat); one written by a worker that sends no heartbeat (the
    previous release) expires after ``lease_s``. An errored request can be retried, by a
    message sent after its failed run began (``sent_at``: the caller's retry); a copy of the
    message that run took (the in-flight sweeper's re-send, a redelivery) gets ``ended``.
    The caller commits.
    """
    now = now or datetime.now(timezone.utc)
    if session.get_bind().dialect.name == "postgresql":
        # A claim lost in a server crash only means the request may run again, which the
        # final write tolerates; so it need not wait for the WAL flush. The final row does.
        session.execute(text("SET LOCAL synchronous_commit = off"))
    skeleton = dict(row, outcome="running", created_at=now, heartbeat_at=now)
    if record(session, skeleton):
        return "claimed"
    existing = get(session, row["request_id"])
    if existing is None:  # deleted between the two statements; try once more
        return "claimed" if record(session, skeleton) else "running"
    if (existing.org, existing.team) != (row.get("org", "default"), row.get("team")):
        # Another tenant used this request id first: never hand its row or answer over.
        return "foreign"
    if existing.outcome in ("ok", "cache_hit"):
        return "done"
    beat = existing.heartbeat_at
    # A heartbeat older than the claim was left by an earlier run: a worker of the previous
    # release took the row over (it resets only created_at) and sends none; its rule applies.
    if (beat is not None and claim_ttl_s is not None
            and _aware(beat) >= _aware(existing.created_at)):
        stale = now.timestamp() - _aware(beat).timestamp() > claim_ttl_s
    else:
        stale = now.timestamp() - _aware(existing.created_at).timestamp() > lease_s
    if (existing.outcome == "error" and sent_at is not None
            and _aware(sent_at) < _aware(existing.created_at)):
        # Sent before the failed run took it: a copy of that run's message, not a retry. The
        # caller was told of the error; running the copy would pay the provider again.
        return "ended"
    if existing.outcome == "error" or (existing.outcome == "running" and stale):
        stmt = (update(LedgerRow).where(LedgerRow.request_id == row["request_id"],
                                        LedgerRow.outcome == existing.outcome,
                                        LedgerRow.created_at == existing.created_at)
                .values(outcome="running", created_at=now, heartbeat_at=now))
        if session.execute(stmt).rowcount:
            return "retried" if existing.outcome == "error" else "resumed"
    return "running"


def finish(session: Session, row: dict[str, Any]) -> bool:
    """Write the final values of a claimed row; True exactly once per claim (settle then)."""
    params = _columns(row)
    params["b_request_id"] = params.pop("request_id")
    try:
        return bool(session.execute(_finish_once(), params).rowcount)
    except SQLAlchemyError as exc:
        raise LedgerError(f"could not finish ledger row {row['request_id']}: {exc}") from exc


@functools.cache
def _finish_once() -> Any:
    """``UPDATE ... WHERE request_id = :b_request_id AND outcome = 'running'``, built once; the
    SET clause comes from the execute parameters (a Core statement: no ORM bulk-update work)."""
    table = LedgerRow.__table__
    return update(table).where(table.c.request_id == bindparam("b_request_id"),
                               table.c.outcome == "running")


def add_cost(session: Session, request_id: str, cost: Decimal, estimated: Decimal) -> None:
    """Add attempts a second run paid for to a row another run already finished."""
    session.execute(update(LedgerRow).where(LedgerRow.request_id == request_id)
                    .values(cost=LedgerRow.cost + cost,
                            estimated_cost=LedgerRow.estimated_cost + estimated,
                            attempts=LedgerRow.attempts + 1))


def _aware(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


# --- operator queries (spend over time, exports) ------------------------------------------

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
                  func.sum(case((part, 0), else_=func.cast(LedgerRow.cache_hit, _int_type()))),
                  func.coalesce(func.sum(LedgerRow.cost), 0),
                  func.coalesce(func.sum(baseline), 0),
                  func.coalesce(func.sum(tokens_in), 0),
                  func.coalesce(func.sum(LedgerRow.output), 0),
                  func.coalesce(func.sum(listed), 0),
                  func.coalesce(func.sum(hit_base), 0),
                  func.coalesce(func.sum(LedgerRow.cache_read), 0),
                  func.sum(func.cast(LedgerRow.volatile_prefix, _int_type())),
                  func.coalesce(func.sum(LedgerRow.estimated_cost), 0),
                  func.coalesce(func.sum(LedgerRow.attempts), 0),
                  func.coalesce(func.sum(LedgerRow.reasoning), 0))
    stmt = _filtered(stmt, since=since, until=until, team=team, prefix=request_id_prefix)
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
    stmt = _filtered(select(LedgerRow), since=since, until=until, team=team, prefix=None)
    yield from session.scalars(stmt.order_by(LedgerRow.id).execution_options(yield_per=batch))


def export_columns() -> list[str]:
    """Ledger attribute names in table order, as exports write them (``user``, not ``user_id``)."""
    from sqlalchemy import inspect

    return [attr.key for attr in inspect(LedgerRow).column_attrs]


def _filtered(stmt: Any, *, since: datetime | None, until: datetime | None, team: str | None,
              prefix: str | None) -> Any:
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
