"""A batch attempt that outlives one task run: left ``pending`` between visits, taken up again.

A request whose provider batch is slower than a task waits is one provider attempt however
many times its task comes back to poll. A visit that leaves it marks it ``pending`` (in flight at
the provider: neither lost nor charged yet, so a run that takes the request over does not charge
it at its worst case), and the next visit takes it up under its own run and ends it as usual.
"""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.db.attempts import AttemptRow
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)
#: The outcome of an attempt waiting in a provider batch between two visits of its task.
PENDING = "pending"


def pend(session: Session, attempt_id: int) -> bool:
    """Leave the ``sent`` batch attempt ``attempt_id`` pending; the caller commits."""
    return bool(session.execute(update(AttemptRow)
                                .where(AttemptRow.id == attempt_id, AttemptRow.outcome == "sent")
                                .values(outcome=PENDING)).rowcount)


def reopen_pending(rt: WorkerRuntime, request_id: str, run: str) -> int | None:
    """Take up the pending batch attempt of ``request_id`` under ``run``: its id, or None."""
    try:
        with rt.session() as s:
            found = s.execute(update(AttemptRow)
                              .where(AttemptRow.request_id == request_id,
                                     AttemptRow.outcome == PENDING)
                              .values(outcome="sent", run=run)
                              .returning(AttemptRow.id)).scalars().all()
    except SQLAlchemyError as exc:
        log.warning("could not take up the pending batch attempt of %s: %s", request_id, exc)
        return None
    return int(found[0]) if found else None


def adopt_sent(rt: WorkerRuntime, request_id: str) -> int:
    """A run taking over a dead run whose request sits in a provider batch: that run's ``sent``
    batch attempt is in flight at the provider, not lost; leave it pending for this run to take
    up (else it would be charged at its worst case and the answer billed again). How many."""
    try:
        with rt.session() as s:
            return int(s.execute(update(AttemptRow)
                                 .where(AttemptRow.request_id == request_id,
                                        AttemptRow.outcome == "sent",
                                        AttemptRow.batch.is_(True))
                                 .values(outcome=PENDING)).rowcount or 0)
    except SQLAlchemyError as exc:
        log.warning("could not adopt the batch attempt of %s: %s", request_id, exc)
        return 0
