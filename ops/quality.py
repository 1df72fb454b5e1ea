"""The quality table: per org, feature and served tier (on a ladder: per task type and rung),
judged agreement with its interval, and what routing saved on those pairs against what the
disagreements cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from models.domain.quality import wilson


@dataclass(frozen=True)
class QualityRow:
    """One line of ``sluice quality``."""

    org: str
    feature: str
    tier: str
    judged: int
    agree: int
    low: float
    high: float
    #: Served cheap: what the flagship would have cost minus what the cheap answer did (the
    #: shadow's cost is the flagship's price of the same prompt). Served flagship: 0. On a
    #: ladder: the same against the rung above, for the pairs shadowed upward.
    saved: Decimal
    #: The routing savings on the pairs that disagreed: what a cheap answer that was not good
    #: enough "saved" (an operator weighs it against the cost of a wrong answer).
    saved_on_disagreement: Decimal
    shadow_cost: Decimal
    judge_cost: Decimal
    floor: float | None
    thumbs_up: int = 0
    thumbs_down: int = 0
    #: A ladder feature's pairs: the task type and the rung that answered (None off a ladder).
    task_type: str | None = None
    rung: int | None = None

    @property
    def agreement(self) -> float:
        """Share of judged pairs that agreed."""
        return self.agree / self.judged if self.judged else 0.0

    @property
    def below_floor(self) -> bool:
        """The lower bound is under the feature's floor."""
        return self.floor is not None and self.low < self.floor

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (money as strings)."""
        return {"org": self.org, "feature": self.feature, "tier": self.tier,
                "judged": self.judged, "agree": self.agree, "agreement": round(self.agreement, 4),
                "low": round(self.low, 4), "high": round(self.high, 4), "floor": self.floor,
                "saved": str(self.saved), "saved_on_disagreement": str(self.saved_on_disagreement),
                "shadow_cost": str(self.shadow_cost), "judge_cost": str(self.judge_cost),
                "thumbs_up": self.thumbs_up, "thumbs_down": self.thumbs_down,
                "task_type": self.task_type, "rung": self.rung}


def quality_rows(session: Any, settings: Any, *, feature: str | None = None,
                 org: str | None = None, since: datetime | None = None) -> list[QualityRow]:
    """Every (org, feature, served tier, task type, rung) with judged pairs; the floor is the
    feature's (deployment config), compared with each org's pairs on their own."""
    from models.db.quality import feedback_counts, quality_lines

    confidence = settings.quality.confidence
    feedback = feedback_counts(session)
    rows = []
    for line in quality_lines(session, feature=feature, org=org, since=since):
        low, high = wilson(line.agree, line.judged, confidence)
        guard = settings.quality.for_feature(line.feature)
        up, down = feedback.get((line.org, line.feature, line.tier), (0, 0))
        rows.append(QualityRow(line.org, line.feature, line.tier, line.judged, line.agree, low,
                               high, line.saved, line.saved_on_disagreement, line.shadow_cost,
                               line.judge_cost, None if guard is None else guard.floor, up,
                               down, task_type=line.task_type, rung=line.rung))
    return rows
