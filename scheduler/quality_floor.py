"""The quality floor: move a feature's routing toward the flagship when its judged agreement
falls, back when it holds; every move recorded, audited, alerted and reversible. A move is a
threshold of the feature's router, or on a ladder feature the ladder's target.

Everything here is per (org, feature): feature names are chosen per org, so one org's wrong
cheap answers must neither move another org's feature to the flagship (it would pay for them)
nor be diluted by its pairs. The floor's settings (floor, step, bounds) are the deployment's,
per feature name, and apply to each org's feature on its own."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.db import audit
from models.db import quality as repo
from models.domain.errors import ValidationError
from models.domain.quality import Move, floor_move
from models.domain.settings import Settings

log = logging.getLogger("sluice.quality")
#: A threshold above every score: the feature goes to the flagship whatever the router says.
ALL_FLAGSHIP = 1.0 + 1e-9


def base_threshold(settings: Settings, feature: str) -> float:
    """The operator's configured threshold of ``feature`` (the floor never moves below it);
    on a feature with a ladder, the ladder's configured target."""
    ladder = ladder_of(settings, feature)
    if ladder is not None:
        return ladder.target
    for entry in settings.routing.policies:
        if entry.get("feature") == feature and "threshold" in entry:
            return float(entry["threshold"])
    return settings.routing.cheap_threshold


class MoveBook:
    """Each moved (org, feature)'s threshold, read from the ledger at most every ``ttl_s``
    seconds."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = 2.0) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._thresholds: dict[tuple[str, str], float] = {}
        self._loaded = -1e9
        self._lock = threading.Lock()

    def thresholds(self) -> dict[tuple[str, str], float]:
        """(org, feature) -> threshold now (moved features only)."""
        if time.monotonic() - self._loaded > self.ttl_s and self._lock.acquire(blocking=False):
            try:
                with self.sessions() as s:
                    self._thresholds = repo.current_thresholds(s)
            except SQLAlchemyError as exc:  # routing goes on with the last thresholds read
                log.warning("could not read routing moves (keeping the last ones): %s", exc)
            finally:
                self._loaded = time.monotonic()
                self._lock.release()
        return self._thresholds

    def apply(self, org: str, feature: str, policy: Any) -> Any:
        """``policy`` at the threshold ``org``'s feature was moved to (unchanged when it never
        moved; another org's move of the same feature name does not count)."""
        moved = self.thresholds().get((org, feature))
        if moved is None or moved == policy.threshold:
            return policy
        return replace(policy, feature=feature,
                       threshold=ALL_FLAGSHIP if moved >= 1.0 else moved)


def evaluate(session: Session, settings: Settings, org: str, feature: str) -> Move | None:
    """Apply the floor to ``org``'s ``feature``'s pairs judged since its last move; the move
    made (with its audit entry), or None. The caller commits, then calls :func:`alert`."""
    guard = settings.quality.for_feature(feature)
    if guard is None or guard.floor is None:
        return None
    if session.get_bind().dialect.name == "postgresql":
        # Workers judging the same org's feature at once must not both move it: one at a
        # time (other orgs' features of that name move on their own, so are not held up).
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:f))"),
                        {"f": f"sluice.quality/{org}/{feature}"})
    last = repo.last_move(session, org, feature)
    base = base_threshold(settings, feature)
    threshold = base if last is None else last.after
    agree, n = repo.recent_agreement(session, org, feature,
                                     since=None if last is None else last.created_at,
                                     limit=settings.quality.window)
    move = floor_move(feature, guard, agree=agree, n=n, threshold=threshold, base=base,
                      confidence=settings.quality.confidence)
    if move is None:
        return None
    move = replace(move, org=org)
    on_ladder = ladder_of(settings, feature) is not None
    if on_ladder:
        # The same row and audit entry; the routing path reads it as the ladder's target.
        move = replace(move, reason=f"ladder target: {move.reason}")
    row = repo.record_move(session, org=org, feature=feature, before=move.before,
                           after=move.after, direction=move.direction, reason=move.reason)
    audit.record_action(session, actor="quality-floor", action="routing.move",
                        target=f"{org}/{feature}", reason=move.reason,
                        detail={"move": row.id, "org": org, "feature": feature,
                                "before": move.before, "after": move.after,
                                "direction": move.direction, "ladder": on_ladder})
    return move


def ladder_of(settings: Settings, feature: str) -> Any:
    """The ladder ``feature`` routes by (None: the RouterSet threshold is what a move moves)."""
    from scheduler.router.ladder_book import shared_book

    book = shared_book(settings.routing)
    return None if book is None else book.for_feature(feature)


def revert(session: Session, feature: str, *, actor: str, reason: str = "",
           org: str | None = None) -> Move:
    """Undo the newest move of ``org``'s ``feature`` (a move of its own, audited); the caller
    commits. Without ``org``: the one org with a feature of that name, and a ValidationError
    when several have one (which org's routing changes is the operator's to say)."""
    if org is None:
        orgs = repo.feature_orgs(session, feature)
        if len(orgs) > 1:
            raise ValidationError(
                f"feature {feature!r} exists in {len(orgs)} orgs ({', '.join(orgs)}), each "
                "routed on its own; name the one to revert with --org", field="org")
        org = orgs[0] if orgs else None
    last = None if org is None else repo.last_move(session, org, feature)
    if last is None or org is None:
        where = "" if org is None else f" in org {org!r}"
        raise ValidationError(f"feature {feature!r} has no routing move to revert{where}; "
                              "`sluice quality moves` lists them", field="feature")
    why = reason or f"revert of move {last.id}"
    row = repo.record_move(session, org=org, feature=feature, before=last.after,
                           after=last.before, direction="revert", reason=why, actor=actor,
                           reverts=last.id)
    audit.record_action(session, actor=actor, action="routing.revert",
                        target=f"{org}/{feature}", reason=why,
                        detail={"move": row.id, "org": org, "feature": feature,
                                "reverts": last.id, "before": last.after,
                                "after": last.before})
    return Move(feature, last.after, last.before, "cheap" if last.before < last.after
                else "flagship", why, org=org)


def alert(settings: Settings, move: Move) -> None:
    """Say a move happened: a warning in the log, and the configured webhook (best effort)."""
    what = "target" if move.reason.startswith("ladder target") else "threshold"
    message = (f"quality floor moved feature {move.feature} of org {move.org} toward the "
               f"{move.direction}: "
               f"{what} {move.before:.3f} -> {move.after:.3f} ({move.reason})")
    log.warning("quality alert: %s", message)
    url = settings.quality.alert_webhook
    if not url:
        return
    from scheduler.alerts import post_json

    try:
        post_json(url, {"kind": "routing.move", "org": move.org, "feature": move.feature,
                        "direction": move.direction, "before": move.before,
                        "after": move.after, "message": message})
    except Exception as exc:  # noqa: BLE001 - the move stands; the audit trail has it
        log.warning("quality alert webhook %s failed: %s", url, exc)
