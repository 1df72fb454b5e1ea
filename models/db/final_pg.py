"""The worker's final ledger write on PostgreSQL: its statements pipelined in one round trip."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models.domain.errors import LedgerError

# The same statements, in the same order and the same transaction, as the portable path of
# workers.attempts.finalize: each runs on its own (READ COMMITTED) snapshot and sees what the
# ones before it wrote. Only their round trips are shared (psycopg pipeline mode), so nothing
# a statement reads may come from the client between them: the ledger row's totals are summed
# by the server, and the recovery of a lost ``sent`` row is part of the end's statement.

# The successful attempt's end; when its ``sent`` row is missing altogether (lost in a
# database crash before it was flushed) the paid answer is recorded whole, as ``ok``.
_END = """
WITH ended AS (
    UPDATE attempts SET outcome = 'ok', billing = %(billing)s, cost = %(cost)s,
           input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s,
           error_code = NULL, finished_at = %(now)s
    WHERE id = %(attempt_id)s AND outcome = 'sent'
    RETURNING id
), recovered AS (
    INSERT INTO attempts (request_id, run, created_at, org, team, feature, provider, model,
                          deployment, kind, stream, batch, outcome, billing, error_code,
                          input_tokens, output_tokens, cost, worst_case, finished_at, settled)
    SELECT %(request_id)s, 'recovered', %(now)s, %(org)s, %(team)s, %(feature)s,
           %(provider)s, %(model)s, %(deployment)s, 'call', false, %(batch)s, 'ok',
           %(billing)s, NULL, %(input_tokens)s, %(output_tokens)s, %(cost)s, %(cost)s,
           %(now)s, false
    WHERE NOT EXISTS (SELECT 1 FROM ended)
          AND NOT EXISTS (SELECT 1 FROM attempts WHERE id = %(attempt_id)s)
    RETURNING id
)
SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM recovered)
"""

# models.db.attempts.charge_lost (every run's): what is still ``sent`` may have been billed.
_CHARGE_LOST = """
UPDATE attempts SET outcome = 'lost', billing = 'estimated', cost = worst_case,
       error_code = 'worker_lost', finished_at = %(now)s
WHERE request_id = %(request_id)s AND outcome = 'sent'
"""

# models.db.attempts.settle_all_split.
_SETTLE_ALL = """
UPDATE attempts SET settled = true
WHERE request_id = %(request_id)s AND NOT settled AND outcome <> 'sent'
RETURNING cost, billing
"""


@functools.cache
def _finish_sql(columns: tuple[str, ...]) -> str:
    """models.db.ledger.finish with the totals of models.db.attempts.charged summed in place."""
    sets = ", ".join(f'"{c}" = %({c})s' for c in columns)
    return f"""
UPDATE ledger SET {sets},
       cost = t.total, estimated_cost = t.estimated, attempts = t.n
FROM (SELECT coalesce(sum(cost), 0) AS total,
             coalesce(sum(CASE WHEN billing = 'estimated' THEN cost ELSE 0 END), 0) AS estimated,
             count(*) AS n
      FROM attempts WHERE request_id = %(b_request_id)s) AS t
WHERE ledger.request_id = %(b_request_id)s AND ledger.outcome = 'running'
RETURNING ledger.cost, ledger.estimated_cost, ledger.attempts
"""


def applies(session: Session) -> bool:
    """Whether ``session`` talks to PostgreSQL through psycopg 3 (the pipelined path)."""
    bind = session.get_bind()
    return bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg"


def finish(session: Session, row: dict[str, Any], final: dict[str, Any] | None
           ) -> tuple[bool, Decimal, Decimal]:
    """End the successful attempt (``final``), charge what is still ``sent``, finish the
    claimed ledger row with the sum of the request's attempts (``row`` gets the totals) and
    mark every finished attempt settled: one round trip, in ``session``'s transaction (the
    caller commits). Returns (finished by this call, cost settled now, its estimated part)."""
    import psycopg

    rid = row["request_id"]
    now = datetime.now(timezone.utc)
    values = {("user_id" if k == "user" else k): v for k, v in row.items()
              if k not in ("request_id", "cost", "estimated_cost", "attempts")}
    values["b_request_id"] = rid
    finish_sql = _finish_sql(tuple(sorted(k for k in values if k != "b_request_id")))
    base = {"request_id": rid, "now": now}
    raw = session.connection().connection.dbapi_connection
    try:
        with raw.cursor() as c_end, raw.cursor() as c_lost, raw.cursor() as c_fin, \
                raw.cursor() as c_set:
            with raw.pipeline():
                if final is not None:
                    c_end.execute(_END, {
                        **base, "attempt_id": int(final["attempt_id"]),
                        "billing": final["billing"], "cost": Decimal(final["cost"]),
                        "input_tokens": int(final["input_tokens"]),
                        "output_tokens": int(final["output_tokens"]),
                        "org": row.get("org", "default"), "team": row["team"],
                        "feature": row["feature"], "provider": row["provider"],
                        "model": row["model"], "deployment": row.get("deployment", ""),
                        "batch": bool(final.get("batch"))})
                c_lost.execute(_CHARGE_LOST, base)
                c_fin.execute(finish_sql, values)
                c_set.execute(_SETTLE_ALL, base)
            done = c_fin.fetchone()
            settled = c_set.fetchall()
    except psycopg.Error as exc:
        raise LedgerError(f"could not finish ledger row {rid}: {exc}") from exc
    if done is not None:
        row.update(cost=Decimal(done[0]), estimated_cost=Decimal(done[1]), attempts=int(done[2]))
    else:  # finished by another run (rare): ``row`` still carries the totals, as elsewhere
        from models.db.attempts import charged

        total, estimated, n = charged(session, rid)
        row.update(cost=total, estimated_cost=estimated, attempts=n)
    owed = sum((Decimal(c) for c, _ in settled), Decimal(0))
    owed_estimated = sum((Decimal(c) for c, b in settled if b == "estimated"), Decimal(0))
    return done is not None, owed, owed_estimated
