"""Training data from a team's own traffic: judged pairs (and feedback) of chosen features,
joined to the prompt text those features opted to keep; and the promotion rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.db.stored_text import StoredTextRow
from models.db.tables import FeedbackRow, JudgementRow
from ops.router import metrics as M
from ops.router.datasets import Example


def last_user(prompt: str) -> str:
    """The newest user turn of a stored prompt (``models.db.stored_text.prompt_text``): what a
    router scores."""
    marker = "\nuser: "
    at = prompt.rfind(marker)
    if at >= 0:
        return prompt[at + len(marker):]
    return prompt[len("user: "):] if prompt.startswith("user: ") else prompt


def ledger_examples(session: Session, features: Sequence[str],
                    since: datetime | None = None,
                    orgs: Sequence[str] | None = None) -> list[Example]:
    """One example per judged request with kept text: the cheap tier sufficed when the pair
    agreed (weak 1, strong 1) and not when it disagreed (weak 0). A thumbs down on a cheap
    answer of a request not judged counts as a disagreement, a thumbs up as an agreement.
    ``orgs`` limits it to those orgs' traffic (feature names are each org's own)."""
    # Request ids are unique per org and team only: the text joined is the same tenant's.
    stmt = (select(StoredTextRow.prompt, JudgementRow.agree, JudgementRow.feature,
                   JudgementRow.org, JudgementRow.team, JudgementRow.request_id)
            .join(StoredTextRow, (StoredTextRow.org == JudgementRow.org)
                  & (StoredTextRow.team == JudgementRow.team)
                  & (StoredTextRow.request_id == JudgementRow.request_id))
            .where(JudgementRow.feature.in_(list(features)), JudgementRow.agree.is_not(None))
            .order_by(JudgementRow.id))
    if since is not None:
        stmt = stmt.where(JudgementRow.created_at >= since)
    if orgs:
        stmt = stmt.where(JudgementRow.org.in_(list(orgs)))
    seen: set[tuple[str, str, str]] = set()
    out = []
    for prompt, agree, feature, org, team, rid in session.execute(stmt):
        seen.add((org, team, rid))
        out.append(Example(last_user(prompt), 1.0 if agree else 0.0, 1.0, f"ledger:{feature}"))
    thumbs = (select(StoredTextRow.prompt, FeedbackRow.thumb, FeedbackRow.feature,
                     FeedbackRow.org, FeedbackRow.team, FeedbackRow.request_id)
              .join(StoredTextRow, (StoredTextRow.org == FeedbackRow.org)
                    & (StoredTextRow.team == FeedbackRow.team)
                    & (StoredTextRow.request_id == FeedbackRow.request_id))
              .where(FeedbackRow.feature.in_(list(features)), FeedbackRow.tier == "cheap",
                     FeedbackRow.thumb.is_not(None)).order_by(FeedbackRow.id))
    if orgs:
        thumbs = thumbs.where(FeedbackRow.org.in_(list(orgs)))
    for prompt, thumb, feature, org, team, rid in session.execute(thumbs):
        if (org, team, rid) not in seen:
            seen.add((org, team, rid))
            out.append(Example(last_user(prompt), 1.0 if thumb > 0 else 0.0, 1.0,
                               f"feedback:{feature}"))
    return out


@dataclass(frozen=True)
class Promotion:
    """The candidate's and the current router's strong share at the quality target."""

    candidate: float
    current: float
    target: float

    @property
    def promote(self) -> bool:
        """Only a strictly smaller strong share (fewer flagship calls for the same quality)."""
        if np.isnan(self.candidate):
            return False
        return bool(np.isnan(self.current) or self.candidate < self.current)

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"candidate_strong_share": _num(self.candidate),
                "current_strong_share": _num(self.current), "quality_target": self.target,
                "promote": self.promote}


def compare(examples: Sequence[Example], candidate_oof: Sequence[float],
            current_scores: Sequence[float], target: float) -> Promotion:
    """Strong share each needs to reach ``target`` x the all-strong quality on ``examples``."""
    weak = [e.weak for e in examples]
    strong = [e.strong for e in examples]
    share = []
    for scores in (candidate_oof, current_scores):
        curve = M.quality_curve(np.asarray(scores, dtype=float), weak, strong)
        share.append(M.share_for_quality(curve, target * curve.strong))
    return Promotion(share[0], share[1], target)


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)
