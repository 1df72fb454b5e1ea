"""A run taking over a dead one keeps every hold a dead run's unsettled attempt may be billed
under: freed at the takeover, another request could reserve the room before this run's own
hold covered the attempt, and both be spent past the hard limit (chat and embeddings)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from models.db import attempts, ledger
from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, set_budget
from models.db.embedding_rows import embedding_row
from models.domain.embedding import EmbeddingResult, parse_embedding_request
from models.domain.result import Route
from ops.db import upgrade
from queues.embedding_envelope import EmbeddingEnvelope
from scheduler import governor
from tests.unit.test_money_properties import machine_for
from workers.embeddings.service import execute_embedding


class Kept:
    """An answer stash in memory (workers.tasks._Stash's two calls)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def keep(self, record: dict[str, Any]) -> None:
        self.record = record

    def read(self) -> dict[str, Any]:
        return self.record


def _lapse(sessions: Any, rid: str) -> None:
    """``rid``'s lease lapses while its message waits; the governor frees it (no attempt)."""
    with sessions() as s:
        s.execute(update(ReservationRow).where(ReservationRow.id == rid)
                  .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        assert governor.release_expired(s, datetime.now(timezone.utc)) == 1
        s.commit()


def _racing(m: Any, freed: Any) -> Any:
    """The admission's release, with another producer's request submitted right after a hold
    ``freed(rid)`` names goes back (the moment a leak would let it in)."""
    real = m.admission.release

    def release(rid: str, session: Any = None) -> Any:
        out = real(rid, session=session)
        if freed(rid):
            m.submit(feature="f1", model="gpt-4o", lane="interactive", max_tokens=400)
        return out

    return real, release


def _budget(sessions: Any) -> BudgetRow:
    with sessions() as s:
        return s.scalars(select(BudgetRow).where(BudgetRow.key == "f1")).one()


def test_a_chat_takeover_keeps_the_hold_a_dead_runs_sent_attempt_is_under(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    m = machine_for(url, tmp_path)()
    sessions = m.rt.sessions
    try:
        m.submit(feature="f1", model="gpt-4o", lane="interactive", max_tokens=400)
        (msg,) = m.queue
        rid1 = msg["reservation_id"]
        with sessions() as s:  # room for one such request only
            amount = s.scalar(select(ReservationRow.amount).where(ReservationRow.id == rid1))
            set_budget(s, "feature", "f1", "total", hard=amount * Decimal("1.5"))
            s.commit()
        m.peak["f1"] = amount * Decimal("1.5")
        m.admission.invalidate()
        _lapse(sessions, rid1)
        # The first run's second check holds the money again (rid2), sends, and is killed.
        m.deliver(i=0, script=["kill"], keep=True)
        with sessions() as s:
            opened = list(s.scalars(select(ReservationRow.id)
                                    .where(ReservationRow.state == "open")))
            sent = list(s.scalars(select(AttemptRow.outcome)))
        assert len(opened) == 1 and opened[0] != rid1 and sent == ["sent"]
        m.submit(feature="f1", model="gpt-4o", lane="interactive", max_tokens=400)
        assert len(m.queue) == 1  # refused while rid2 holds the dead attempt's worst case
        real, m.admission.release = _racing(m, lambda rid: rid == opened[0])
        try:
            m.deliver(i=0, script=[], keep=False)  # the takeover
        finally:
            m.admission.release = real
        b = _budget(sessions)
        # Freed at the takeover, rid2's room went to the racing request, and the dead attempt's
        # worst case was charged on top of it: 133 % of the limit.
        assert b.spent + b.reserved <= b.hard_limit
        assert b.spent > 0  # the dead attempt is billed
    finally:
        m.admission.close()


def test_an_embedding_takeover_keeps_the_hold_its_stashed_answer_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    m = machine_for(url, tmp_path)()
    rt, sessions, adm = m.rt, m.rt.sessions, m.admission
    try:
        req = parse_embedding_request({"request_id": uuid.uuid4().hex, "team": "t",
                                       "feature": "f1", "model": "text-embedding-3-small",
                                       "inputs": ["hello there"] * 50})
        route = Route(tier="embedding", model="text-embedding-3-small", provider="openai",
                      backend="api", lane="interactive")
        amount = Decimal("0.004")
        with sessions() as s:
            set_budget(s, "feature", "f1", "total", hard=Decimal("0.006"))
            s.commit()
        m.peak["f1"] = Decimal("0.006")
        adm.invalidate()
        rid1 = adm.reserve(req, route, amount)
        _lapse(sessions, rid1)
        rid2 = adm.reserve(req, route, amount)  # the dead run's second check held it again
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        with sessions() as s:  # the dead run's claim and its sent attempt
            assert ledger.record(s, embedding_row(req, route, outcome="running", items=50,
                                                  now=old))
            aid = attempts.begin(s, {"request_id": req.request_id, "run": "dead", "org": req.org,
                                     "team": "t", "feature": "f1", "provider": "openai",
                                     "model": route.model, "deployment": "", "kind": "call",
                                     "worst_case": amount})
            s.commit()
        # It had its answer and stashed it (naming rid2), then died before its ledger write.
        result = EmbeddingResult(request_id=req.request_id, model=route.model,
                                 provider="openai", route=route, vectors=("AAAA",) * 50,
                                 prompt_tokens=100, total_tokens=100, items=50, cost=amount)
        final = {"attempt_id": aid, "cost": str(amount), "input_tokens": 100,
                 "output_tokens": 0, "billing": "exact", "batch": False}
        stash = Kept({"reply": {"ok": True, "result": result.model_dump(mode="json")},
                      "reservation_id": rid2, "attempt": final})
        env = EmbeddingEnvelope(request=req, route=route, item_tokens=(2,) * 50,
                                prompt_tokens=100, reservation_id=rid1)
        real, adm.release = _racing(m, lambda rid: rid == rid2)
        try:
            reply = execute_embedding(env.model_dump(mode="json"), rt, stash=stash)
        finally:
            adm.release = real
        assert reply["ok"], reply
        with sessions() as s:
            state = s.scalar(select(ReservationRow.state).where(ReservationRow.id == rid2))
        b = _budget(sessions)
        # It released rid2 (the racing request took its room), then charged the stash past it.
        assert state == "settled"
        assert b.spent == amount and b.spent + b.reserved <= b.hard_limit
    finally:
        adm.close()
