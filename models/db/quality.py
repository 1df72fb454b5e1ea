"""Quality repository: judged pairs, feedback, and the routing moves the floor makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from models.db.budgets import insert_ignore
from models.db.tables import FeedbackRow, JudgementRow, LedgerRow, RoutingMoveRow


def open_judgement(session: Session, values: dict[str, Any]) -> bool:
    """Insert a judgement (once per served request and tenant); True when this call did."""
    row = {"created_at": datetime.now(timezone.utc), "detail": "", **values}
    row["detail"] = str(row["detail"])[:200]
    return bool(insert_ignore(session, JudgementRow.__table__, row,
                              ["org", "team", "request_id"]))


def add_vote(session: Session, *, org: str, team: str, request_id: str, position: str,
             vote: bool | None, cost: Decimal) -> JudgementRow | None:
    """Record an LLM judge's vote (``first`` or ``second``) and what it cost; the row after."""
    column = JudgementRow.vote_first if position == "first" else JudgementRow.vote_second
    where = (JudgementRow.org == org, JudgementRow.team == team,
             JudgementRow.request_id == request_id)
    session.execute(update(JudgementRow).where(*where).values(
        {column.key: vote, "judge_cost": JudgementRow.judge_cost + cost}))
    return session.scalars(select(JudgementRow).where(*where)).first()


def decide(session: Session, row_id: int, *, agree: bool, score: float, detail: str) -> bool:
    """Set a judgement's verdict once (the second vote's writer wins it); True when this did."""
    res = session.execute(update(JudgementRow).where(JudgementRow.id == row_id,
                                                     JudgementRow.agree.is_(None))
                          .values(agree=agree, score=score, detail=detail[:200]))
    return bool(res.rowcount)


def recent_agreement(session: Session, org: str, feature: str, *, after_id: int = 0,
                     since: datetime | None = None, limit: int = 200) -> tuple[int, int]:
    """(agreeing, judged) of ``org``'s ``feature``'s newest ``limit`` decided pairs after
    judgement ``after_id`` (and ``since``), both directions of shadowing together. Another
    org's feature of the same name is another feature: its pairs never count here."""
    stmt = select(JudgementRow.agree).where(JudgementRow.org == org,
                                            JudgementRow.feature == feature,
                                            JudgementRow.agree.is_not(None),
                                            JudgementRow.id > after_id)
    if since is not None:
        stmt = stmt.where(JudgementRow.created_at >= since)
    votes = list(session.scalars(stmt.order_by(JudgementRow.id.desc()).limit(limit)))
    return sum(1 for v in votes if v), len(votes)


def last_judgement_id(session: Session) -> int:
    """The newest judgement's id (0: none)."""
    return int(session.scalar(select(func.max(JudgementRow.id))) or 0)


@dataclass(frozen=True)
class QualityLine:
    """Judged pairs of one org's feature, served tier and (on a ladder) task type and rung,
    with what routing saved on them."""

    org: str
    feature: str
    tier: str
    judged: int
    agree: int
    served_cost: Decimal
    shadow_cost: Decimal
    judge_cost: Decimal
    task_type: str | None = None
    rung: int | None = None
    #: Shadow minus served cost of the pairs whose shadow was the dearer answer (a cheap
    #: tier's flagship shadow, or a ladder rung's shadow one rung up), and of those that
    #: disagreed.
    saved: Decimal = Decimal(0)
    saved_on_disagreement: Decimal = Decimal(0)


def quality_lines(session: Session, *, feature: str | None = None, org: str | None = None,
                  since: datetime | None = None) -> list[QualityLine]:
    """Per org, feature, served tier, task type and rung: decided pairs, agreeing ones, the
    three costs, and what routing saved on them."""
    j = JudgementRow
    agree = func.sum(case((j.agree.is_(True), 1), else_=0))
    # Off a ladder the shadow of a cheap answer is the flagship's; on one, the rung above.
    dearer = case((j.shadow_rung.is_not(None), j.shadow_rung > j.served_rung),
                  else_=j.served_tier == "cheap")
    gain = j.shadow_cost - j.served_cost
    saved = func.sum(case((dearer, gain), else_=0))
    wrong = func.sum(case((and_(dearer, j.agree.is_(False)), gain), else_=0))
    keys = (j.org, j.feature, j.served_tier, j.task_type, j.served_rung)
    stmt = (select(*keys, func.count(), agree, func.coalesce(func.sum(j.served_cost), 0),
                   func.coalesce(func.sum(j.shadow_cost), 0),
                   func.coalesce(func.sum(j.judge_cost), 0), func.coalesce(saved, 0),
                   func.coalesce(wrong, 0))
            .where(j.agree.is_not(None)).group_by(*keys).order_by(*keys))
    if feature is not None:
        stmt = stmt.where(j.feature == feature)
    if org is not None:
        stmt = stmt.where(j.org == org)
    if since is not None:
        stmt = stmt.where(j.created_at >= since)
    return [QualityLine(str(o), str(f), str(t), int(n), int(a or 0), Decimal(sc), Decimal(sh),
                        Decimal(jc), task_type=tt, rung=None if r is None else int(r),
                        saved=Decimal(sv), saved_on_disagreement=Decimal(wr))
            for o, f, t, tt, r, n, a, sc, sh, jc, sv, wr in session.execute(stmt)]


def record_feedback(session: Session, *, org: str, team: str, request_id: str,
                    thumb: int | None, metric: str | None, value: float | None) -> bool:
    """Attach an outcome to a request of this tenant; False when its ledger has no such row
    (the caller should say so: feedback on an unknown request joins nothing)."""
    row = session.scalars(select(LedgerRow).where(LedgerRow.request_id == request_id,
                                                  LedgerRow.org == org,
                                                  LedgerRow.team == team)).first()
    if row is None:
        return False
    session.add(FeedbackRow(request_id=request_id, created_at=datetime.now(timezone.utc),
                            org=org, team=team, feature=row.feature, tier=row.tier, thumb=thumb,
                            metric=metric, value=value))
    session.flush()
    return True


def feedback_counts(session: Session) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Per (org, feature, tier): thumbs up and thumbs down."""
    up = func.sum(case((FeedbackRow.thumb > 0, 1), else_=0))
    down = func.sum(case((FeedbackRow.thumb < 0, 1), else_=0))
    keys = (FeedbackRow.org, FeedbackRow.feature, FeedbackRow.tier)
    stmt = select(*keys, up, down).group_by(*keys)
    return {(str(o), str(f), str(t)): (int(u or 0), int(d or 0))
            for o, f, t, u, d in session.execute(stmt)}


def current_thresholds(session: Session) -> dict[tuple[str, str], float]:
    """Each moved (org, feature)'s threshold now: the ``after`` of its newest move."""
    m = RoutingMoveRow
    newest = (select(m.org, m.feature, func.max(m.id).label("id"))
              .group_by(m.org, m.feature).subquery())
    stmt = select(m.org, m.feature, m.after).join(newest, m.id == newest.c.id)
    return {(str(o), str(f)): float(a) for o, f, a in session.execute(stmt)}


def last_move(session: Session, org: str, feature: str) -> RoutingMoveRow | None:
    """``org``'s feature's newest move, if any."""
    return session.scalars(select(RoutingMoveRow).where(RoutingMoveRow.org == org,
                                                        RoutingMoveRow.feature == feature)
                           .order_by(RoutingMoveRow.id.desc()).limit(1)).first()


def feature_orgs(session: Session, feature: str) -> list[str]:
    """The orgs with a feature of this name (a routing move or a judged pair), sorted."""
    moved = select(RoutingMoveRow.org).where(RoutingMoveRow.feature == feature)
    judged = select(JudgementRow.org).where(JudgementRow.feature == feature)
    return sorted({str(o) for o in session.scalars(moved.union(judged))})


def moves(session: Session, feature: str | None = None, limit: int = 100, *,
          org: str | None = None) -> list[RoutingMoveRow]:
    """Moves (of one org and/or feature when named), newest first."""
    stmt = select(RoutingMoveRow).order_by(RoutingMoveRow.id.desc()).limit(limit)
    if feature is not None:
        stmt = stmt.where(RoutingMoveRow.feature == feature)
    if org is not None:
        stmt = stmt.where(RoutingMoveRow.org == org)
    return list(session.scalars(stmt))


def record_move(session: Session, *, org: str, feature: str, before: float, after: float,
                direction: str, reason: str, actor: str = "quality-floor",
                reverts: int | None = None) -> RoutingMoveRow:
    """Append a move of ``org``'s feature; the caller commits (with its audit entry, in the
    same transaction)."""
    row = RoutingMoveRow(created_at=datetime.now(timezone.utc), org=org, feature=feature,
                         before=before, after=after, direction=direction, reason=reason[:500],
                         actor=actor[:128], reverts=reverts)
    session.add(row)
    session.flush()
    return row
