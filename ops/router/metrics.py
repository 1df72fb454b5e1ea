"""Router quality metrics: quality against strong-call share, APGR, CPT(x %) and share for 95 %."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Mean quality when the lowest-scored share of prompts goes to the strong model.

    Points sit at the edges of blocks of tied scores; between them the curve is linear,
    which is the expected quality when ties are broken at random.
    """

    shares: np.ndarray
    quality: np.ndarray
    weak: float
    strong: float

    def at(self, share: float) -> float:
        """Quality at a strong-call share in [0, 1]."""
        return float(np.interp(share, self.shares, self.quality))


def quality_curve(scores: Sequence[float], weak: Sequence[float],
                  strong: Sequence[float]) -> Curve:
    """The curve of a router whose ``scores`` are the probability that the weak model suffices."""
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weak, dtype=float)
    st = np.asarray(strong, dtype=float)
    n = len(s)
    if n == 0 or len(w) != n or len(st) != n:
        raise ValueError("scores, weak and strong must be non-empty and of one length")
    order = np.argsort(s, kind="stable")
    gain = (st - w)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    sorted_s = s[order]
    # Keep only block edges: index 0, every i where the score changes, and n.
    edges = np.concatenate([[0], np.flatnonzero(np.diff(sorted_s)) + 1, [n]])
    quality = (w.sum() + cum[edges]) / n
    return Curve(edges / n, quality, float(w.mean()), float(st.mean()))


def oracle_scores(weak: Sequence[float], strong: Sequence[float]) -> np.ndarray:
    """Scores of the router that knows the answers: largest strong-over-weak gain first."""
    return -(np.asarray(strong, dtype=float) - np.asarray(weak, dtype=float))


def apgr(curve: Curve) -> float:
    """Average performance gap recovered: area above the weak line over the strong-weak gap."""
    gap = curve.strong - curve.weak
    if gap <= 0:
        return float("nan")
    # Trapezoids are exact here: the curve is linear between its points.
    area = float(np.sum((curve.quality[1:] + curve.quality[:-1]) / 2 * np.diff(curve.shares)))
    return (area - curve.weak) / gap


def share_for_quality(curve: Curve, target: float) -> float:
    """The smallest strong-call share whose quality reaches ``target`` (nan if none does)."""
    q, x = curve.quality, curve.shares
    if q[0] >= target:
        return 0.0
    hit = np.flatnonzero(q >= target)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    # Linear between the last point below the target and the first at or above it.
    frac = (target - q[i - 1]) / (q[i] - q[i - 1])
    return float(x[i - 1] + frac * (x[i] - x[i - 1]))


def cpt(curve: Curve, fraction: float) -> float:
    """CPT(x): strong-call share needed to recover ``fraction`` of the strong-weak gap."""
    return share_for_quality(curve, curve.weak + fraction * (curve.strong - curve.weak))


def summarize(curve: Curve) -> dict[str, float]:
    """The figures the eval reports for one router on one dataset (shares in [0, 1])."""
    return {
        "weak": curve.weak,
        "strong": curve.strong,
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "share_for_95pct_strong": share_for_quality(curve, 0.95 * curve.strong),
        "quality_at_50pct": curve.at(0.5),
    }
