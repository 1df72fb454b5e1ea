"""Per-feature routing policy: turn a router's score into a tier, and record why."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from models.domain.errors import ConfigError

Tier = Literal["cheap", "flagship", "self-hosted"]
TIERS: tuple[str, ...] = ("cheap", "flagship", "self-hosted")


@dataclass(frozen=True, slots=True)
class TierDecision:
    """The chosen tier with the score and threshold behind it, for the ledger."""

    tier: str
    score: float | None
    threshold: float | None
    reason: str
    router: str = ""

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict (score, threshold, tier, reason, router) for attribution."""
        return asdict(self)


def calibrate_threshold(scores: Sequence[float], target_flagship_share: float) -> float:
    """The threshold that sends about ``target_flagship_share`` of ``scores`` to the flagship.

    A request goes cheap when its score is at or above the threshold, so the threshold is the
    score at the target quantile of a calibration sample of recent traffic.
    """
    if not 0.0 <= target_flagship_share <= 1.0:
        raise ConfigError(f"target_flagship_share must be in [0, 1], not {target_flagship_share}")
    ordered = sorted(float(s) for s in scores)
    if not ordered:
        raise ConfigError("cannot calibrate a threshold on an empty score sample")
    k = round(target_flagship_share * len(ordered))
    if k <= 0:
        return 0.0  # every score is >= 0: nothing goes to the flagship
    if k >= len(ordered):
        return math.nextafter(1.0, math.inf)  # above every score: everything goes flagship
    # Midway between the k-th lowest and the next, so exactly k scores fall below it.
    lo, hi = ordered[k - 1], ordered[k]
    return hi if lo == hi else (lo + hi) / 2


@dataclass(frozen=True)
class RoutingPolicy:
    """How one feature routes.

    ``allowed_tiers`` runs from the tier easy work goes to up to the tier hard work goes to
    (default cheap, then flagship; a bulk feature might use ``("self-hosted", "flagship")``);
    tiers in between are reachable only as ``forced_tier``.
    A score at or above the threshold means the easy tier suffices. ``quality_floor`` is a
    minimum score for the easy tier that no calibrated threshold may go below.
    """

    feature: str = "*"
    #: Registry name of the router this feature uses, and its artifact (learned routers).
    router: str = "heuristic"
    artifact: str | None = None
    allowed_tiers: tuple[str, ...] = ("cheap", "flagship")
    forced_tier: str | None = None
    threshold: float = 0.5
    quality_floor: float | None = None
    #: The share of flagship calls the threshold was (or should be) calibrated to.
    target_flagship_share: float | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.allowed_tiers if t not in TIERS]
        if bad or not self.allowed_tiers or len(set(self.allowed_tiers)) != len(self.allowed_tiers):
            raise ConfigError(
                f"feature {self.feature!r}: allowed_tiers {list(self.allowed_tiers)} must be "
                f"distinct names from {', '.join(TIERS)}", feature=self.feature)
        if self.forced_tier is not None and self.forced_tier not in self.allowed_tiers:
            raise ConfigError(
                f"feature {self.feature!r}: forced_tier {self.forced_tier!r} is not one of "
                f"its allowed tiers {list(self.allowed_tiers)}", feature=self.feature)
        for name in ("threshold", "quality_floor", "target_flagship_share"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0 + 1e-9:
                raise ConfigError(f"feature {self.feature!r}: {name} must be in [0, 1], "
                                  f"not {value}", feature=self.feature)

    @property
    def needs_score(self) -> bool:
        """False when the tier is fixed whatever the score (forced, or one tier allowed)."""
        return self.forced_tier is None and len(self.allowed_tiers) > 1

    @property
    def effective_threshold(self) -> float:
        """The threshold actually applied: never below the quality floor."""
        if self.quality_floor is None:
            return self.threshold
        return max(self.threshold, self.quality_floor)

    def calibrated(self, scores: Sequence[float],
                   target_flagship_share: float | None = None) -> RoutingPolicy:
        """A copy whose threshold sends about the target share of ``scores`` to the flagship."""
        target = self.target_flagship_share if target_flagship_share is None \
            else target_flagship_share
        if target is None:
            raise ConfigError(f"feature {self.feature!r}: no target_flagship_share to calibrate to")
        return replace(self, threshold=calibrate_threshold(scores, target),
                        target_flagship_share=target)

    def decide(self, score: float | None, router: str = "") -> TierDecision:
        """The tier for ``score`` (None only when :attr:`needs_score` is False)."""
        if self.forced_tier is not None:
            return TierDecision(self.forced_tier, score, None, "forced", router)
        if len(self.allowed_tiers) == 1:
            return TierDecision(self.allowed_tiers[0], score, None, "only allowed tier", router)
        if score is None or math.isnan(score):
            raise ValueError(f"feature {self.feature!r} needs a router score to pick a tier")
        easy, hard = self.allowed_tiers[0], self.allowed_tiers[-1]
        limit = self.effective_threshold
        if score >= limit:
            return TierDecision(easy, score, limit, f"score {score:.3f} >= {limit:.3f}", router)
        floor_binds = self.quality_floor is not None and score >= self.threshold
        why = "below quality floor" if floor_binds else "below threshold"
        return TierDecision(hard, score, limit, f"{why}: score {score:.3f} < {limit:.3f}", router)



def policy_from_dict(data: dict[str, Any]) -> RoutingPolicy:
    """A policy from config (JSON/TOML), refusing unknown keys with a message naming them."""
    known = set(RoutingPolicy.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown routing policy key(s) {', '.join(unknown)}; "
                          f"use {', '.join(sorted(known))}")
    fields = dict(data)
    if "allowed_tiers" in fields:
        fields["allowed_tiers"] = tuple(fields["allowed_tiers"])
    return RoutingPolicy(**fields)
