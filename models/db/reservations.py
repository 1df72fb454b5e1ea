"""Reservation statements: the one-round-trip PostgreSQL reserve, its portable twin, closing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, text, update
from sqlalchemy.orm import Session

from models.db.budgets import BudgetRow, ReservationRow, change_budgets, to_budget
from models.domain.budget import Budget, refusal

# One statement, one round trip, autocommit: lock the applicable budgets in id order (so two
# requests never deadlock), decide on the locked (newest) values, then add the reservation to
# every budget and write its row only if all of them fit. Nothing changes when one does not.
# A retry of a request whose reservation on the same budgets is still open holds nothing more
# (``prior``): one request, one reservation, however often its caller retries it.
RESERVE_PG = text("""
WITH prior AS (
    SELECT id FROM reservations
    WHERE request_id = :request_id AND owner = :owner AND budget_ids = :budget_ids
          AND state = 'open'
    LIMIT 1
), locked AS (
    SELECT id, org, scope, key, "window", hard_limit, soft_limit, spent, reserved,
           window_start, resets_at, webhook_url
    FROM budgets WHERE id = ANY(:ids) ORDER BY id FOR UPDATE
), verdict AS (
    SELECT NOT EXISTS (SELECT 1 FROM prior) AND count(*) = :n
           AND coalesce(bool_and(spent + reserved + :amount <= hard_limit), false) AS fits
    FROM locked
), upd AS (
    UPDATE budgets SET reserved = budgets.reserved + :amount
    FROM verdict WHERE verdict.fits AND budgets.id = ANY(:ids)
    RETURNING budgets.id
), ins AS (
    INSERT INTO reservations (id, request_id, owner, amount, budget_ids, state, queue,
                              created_at, expires_at)
    SELECT :rid, :request_id, :owner, :amount, :budget_ids, 'open', :queue, :now, :expires
    FROM verdict WHERE verdict.fits
    RETURNING id
)
SELECT verdict.fits, (SELECT count(*) FROM upd) AS updated, (SELECT count(*) FROM ins) AS written,
       (SELECT id FROM prior) AS prior_id, locked.*
FROM verdict LEFT JOIN locked ON true
""")


def reserve_on_postgres(conn: Connection, params: dict[str, Any]
                        ) -> tuple[bool, list[Budget], str | None]:
    """Run RESERVE_PG on an autocommit connection: (True, [], None) when held, (False, [],
    prior id) when the request already holds one, else (False, budgets as they were, locked,
    when the decision was made, None)."""
    rows = conn.execute(RESERVE_PG, params).all()
    if rows[0].prior_id is not None:
        return False, [], str(rows[0].prior_id)
    if rows[0].fits:
        return True, [], None
    return False, [budget_of(r) for r in rows if r.id is not None], None


def reserve_portable(s: Session, params: dict[str, Any]) -> tuple[bool, list[Budget], str | None]:
    """The same decision with portable statements (SQLite); the caller commits."""
    amount, ids = params["amount"], params["ids"]
    prior = s.scalars(select(ReservationRow.id).where(
        ReservationRow.request_id == params["request_id"], ReservationRow.owner == params["owner"],
        ReservationRow.budget_ids == params["budget_ids"], ReservationRow.state == "open")
        .limit(1)).first()
    if prior is not None:
        return False, [], prior
    # The UPDATE takes SQLite's write lock first and re-checks each limit itself.
    got = s.scalars(update(BudgetRow)
                    .where(BudgetRow.id.in_(ids),
                           BudgetRow.spent + BudgetRow.reserved + amount <= BudgetRow.hard_limit)
                    .values(reserved=BudgetRow.reserved + amount)
                    .returning(BudgetRow.id)).all()
    if len(got) == len(ids):
        s.execute(insert(ReservationRow).values(
            id=params["rid"], request_id=params["request_id"], owner=params["owner"],
            amount=amount,
            budget_ids=params["budget_ids"], state="open", queue=params["queue"],
            created_at=params["now"], expires_at=params["expires"]))
        return True, [], None
    # Read the others under the same lock, then undo the partial reservation.
    rows = [to_budget(r) for r in s.scalars(select(BudgetRow).where(BudgetRow.id.in_(ids)))]
    s.rollback()
    mine = set(got)
    return False, [b if b.id not in mine else replace(b, reserved=b.reserved - amount)
                   for b in rows], None


def extend_reservation(s: Session, rid: str, *, listed: list[int], added: list[int],
                       held: Decimal, target: Decimal, now: datetime) -> bool:
    """Grow reservation ``rid`` from ``held`` to ``target`` on its ``listed`` budgets and hold
    all of ``target`` on ``added`` ones, or raise BudgetExceeded naming one without the room.
    False when a budget vanished meanwhile (the rest still hold it). The caller commits."""
    # Every budget involved is locked in id order (the order reservations and settles use).
    locked = s.scalars(select(BudgetRow).where(BudgetRow.id.in_(listed + added))
                       .order_by(BudgetRow.id).with_for_update()).all()
    for b in locked:
        more = target if b.id in added else target - held
        if b.spent + b.reserved + more > b.hard_limit:
            raise refusal(to_budget(b), more)
    present = {b.id for b in locked}
    if target > held:
        s.execute(change_budgets([i for i in listed if i in present], reserved=target - held,
                                 now=now))
    if added:
        s.execute(change_budgets([i for i in added if i in present], reserved=target, now=now))
    s.execute(update(ReservationRow).where(ReservationRow.id == rid)
              .values(amount=target, budget_ids=",".join(map(str, sorted(set(listed) | present)))))
    return len(locked) == len(listed) + len(added)


def close_reservation(rid: str, before: str, after: str, now: datetime,
                      actual: Decimal | None) -> Any:
    """UPDATE a reservation from state ``before`` to ``after``; rowcount says who did it."""
    values: dict[str, Any] = {"state": after, "closed_at": now}
    if actual is not None:
        values["actual"] = actual
    return (update(ReservationRow)
            .where(ReservationRow.id == rid, ReservationRow.state == before)
            .values(**values).returning(ReservationRow.amount, ReservationRow.budget_ids))


def budget_of(row: Any) -> Budget:
    """A pure Budget from a row of RESERVE_PG."""
    return Budget(scope=row.scope, key=row.key, window=row.window, hard_limit=row.hard_limit,
                  soft_limit=row.soft_limit, spent=row.spent, reserved=row.reserved,
                  window_start=row.window_start, resets_at=row.resets_at, id=row.id,
                  webhook_url=row.webhook_url, org=row.org)
