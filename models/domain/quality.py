"""Quality guard settings and arithmetic: shadow shares, judges, Wilson bounds, floor moves."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

#: The ledger's ``purpose`` of a row: the caller's answer, a shadow answer, a judge's call.
PURPOSES: tuple[str, ...] = ("serve", "shadow", "judge")
#: The tag a shadow or judge request carries (callers may not set it: Gateway.submit refuses).
PURPOSE_TAG = "sluice.purpose"
JudgeKind = Literal["exact", "json", "embedding", "llm"]


class FeatureQuality(BaseModel):
    """One feature's quality guard: how much to shadow, how to judge, where the floor is."""

    #: Share of requests routed cheap that the flagship also answers (off the hot path); on a
    #: ladder, of answers below the top rung that the next rung up also answers.
    shadow_cheap: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Share of requests routed to the flagship that the cheap tier also answers; on a
    #: ladder, of answers above the first rung that the next rung down also answers.
    shadow_flagship: float = Field(default=0.0, ge=0.0, le=1.0)
    judge: JudgeKind = "exact"
    #: JSON judge: the fields that must match (all of the top-level ones when empty).
    json_fields: list[str] = Field(default_factory=list)
    #: Embedding judge: cosine similarity at or above this agrees.
    similarity_floor: float = Field(default=0.85, ge=-1.0, le=1.0)
    #: Floor on the lower confidence bound of agreement; None: measured, never moved.
    floor: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Agreement moves routing back toward the cheap tier only above this lower bound.
    release: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Judged pairs needed (since the last move) before the floor acts.
    min_pairs: int = Field(default=20, ge=1)
    #: How far one move raises (or lowers) the feature's threshold.
    step: float = Field(default=0.25, gt=0.0, le=1.0)
    #: The operator's bound: a move never sets the threshold above this (1.0: all flagship).
    max_threshold: float = Field(default=1.0, ge=0.0, le=1.0)
    #: USD per day the feature's shadows and judge calls may spend (a budget of their own,
    #: ``feature:shadow:<feature>:daily``); None: no budget is made, so nothing is shadowed
    #: unless an operator sets one (`sluice budget set --feature shadow:<feature>`).
    shadow_budget_usd: Decimal | None = Field(default=None, ge=0)


class QualitySettings(BaseModel):
    """Shadow sampling and judging per feature (``"*"``: features not listed)."""

    features: dict[str, FeatureQuality] = Field(default_factory=dict)
    #: The catalogue model the LLM judge asks (a fixed rubric, both orders).
    judge_model: str = "gpt-4o-mini"
    #: The embedding model of the embedding judge (self-hosted: no provider bill).
    embedding_model: str = "all-minilm-l6-v2"
    #: Two-sided confidence of the agreement interval.
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    #: Judged pairs the floor looks at (newest first).
    window: int = Field(default=200, ge=1)
    #: Where an alert about a routing move is POSTed (besides the log and the audit trail).
    alert_webhook: str | None = None

    def for_feature(self, feature: str) -> FeatureQuality | None:
        """The feature's guard, else the ``"*"`` one, else None (not guarded)."""
        return self.features.get(feature) or self.features.get("*")


def shadow_budget_key(feature: str) -> str:
    """The feature-scope budget key that bounds ``feature``'s shadow and judge spend."""
    key = f"shadow:{feature}"
    if len(key) <= 64:
        return key
    # Budget keys hold 64 characters: a long name keeps its head and a digest of the whole,
    # so two features sharing their first 57 characters never share one shadow budget.
    digest = hashlib.sha256(feature.encode()).hexdigest()[:12]
    return f"{key[:51]}:{digest}"


def sampled(request_id: str, share: float) -> bool:
    """Whether ``request_id`` falls in a ``share`` sample (stable: a redelivery decides alike)."""
    if share <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"shadow|{request_id}".encode()).digest()[:8], "big")
    return h / 2**64 < share


def z_for(confidence: float) -> float:
    """The normal quantile of a two-sided ``confidence`` interval."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(agree: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``agree`` successes in ``n`` trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = agree / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pairs_to_clear(floor: float, confidence: float = 0.95) -> int:
    """The fewest pairs whose lower bound can reach ``floor`` at all (every pair agreeing):
    with fewer, even perfect agreement would move the feature, so the floor waits for them."""
    if floor >= 1.0:
        return 1 << 30
    z2 = z_for(confidence) ** 2
    return max(1, math.ceil(z2 * floor / (1.0 - floor) - 1e-9))


@dataclass(frozen=True)
class Move:
    """A change of a feature's routing threshold the floor decided, and why."""

    feature: str
    before: float
    after: float
    direction: Literal["flagship", "cheap"]
    reason: str
    #: Whose feature it is (the floor sets it: a move never reaches another org's feature).
    org: str = "default"


def floor_move(feature: str, guard: FeatureQuality, *, agree: int, n: int, threshold: float,
               base: float, confidence: float = 0.95) -> Move | None:
    """The move the floor asks for given ``agree`` of ``n`` pairs judged since the last move.

    Below the floor (lower bound) the threshold rises one step toward the flagship, never past
    ``guard.max_threshold``; above ``guard.release`` it falls one step, never below ``base``
    (the operator's configured threshold). None: no move (too few pairs, or at a bound).
    """
    if guard.floor is None or n < max(guard.min_pairs, pairs_to_clear(guard.floor, confidence)):
        return None
    lo, hi = wilson(agree, n, confidence)
    what = f"agreement {agree}/{n}, {confidence:.0%} interval [{lo:.3f}, {hi:.3f}]"
    if lo < guard.floor:
        after = min(guard.max_threshold, threshold + guard.step)
        if after <= threshold:
            return None
        return Move(feature, threshold, after, "flagship",
                    f"{what}: lower bound below the floor {guard.floor}")
    if guard.release is not None and lo >= guard.release and threshold > base:
        after = max(base, threshold - guard.step)
        return Move(feature, threshold, after, "cheap",
                    f"{what}: lower bound at or above the release {guard.release}")
    return None
