"""Which rung shadows a ladder-routed answer: the next one up, or (a sampled share) one down."""

from __future__ import annotations

from dataclasses import dataclass

from models.domain.catalogue import Catalogue
from models.domain.quality import sampled
from models.domain.request import ChatRequest
from models.domain.result import Route
from scheduler.router.climb import climbed, options
from scheduler.router.ladder import FeatureLadder


@dataclass(frozen=True)
class RungShadow:
    """The model a shadow is sent to, its rung in the ladder climbed, and which way it went."""

    model: str
    rung: int
    direction: str  # "up": a dearer rung checks a cheaper answer; "down": the reverse


def rung_shadow(ladder: FeatureLadder, route: Route, request: ChatRequest,
                catalogue: Catalogue, prompt_tokens: int, *, up_share: float,
                down_share: float) -> RungShadow | None:
    """The adjacent rung that can serve ``request`` and shadows its answer, or None (not
    sampled, no rung that way, or the answer came from a fallback rather than a rung)."""
    if route.rung is None:
        return None
    task = ladder.task(route.task_type) if route.task_type else None
    rungs, output = climbed(ladder, task, request)
    # Only rungs that can serve the request (capabilities, context) may answer its shadow.
    opts, _ = options(rungs, request, catalogue, prompt_tokens, output)
    up = [o for o in opts if o.index > route.rung and o.model.name != route.model]
    down = [o for o in opts if o.index < route.rung and o.model.name != route.model]
    if up and sampled(request.request_id, up_share):
        return RungShadow(up[0].model.name, up[0].index, "up")
    if down and sampled(request.request_id, down_share):
        return RungShadow(down[-1].model.name, down[-1].index, "down")
    return None
