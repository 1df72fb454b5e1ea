"""The router interface: score how likely the cheap tier is enough for a request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from models.domain.request import ChatRequest


@dataclass(frozen=True, slots=True)
class RouteInput:
    """What a router looks at: the newest user turn, the conversation depth, the output size."""

    prompt: str
    #: User turns before the newest one.
    history_turns: int = 0
    #: The request's output limit; None when unknown (offline evaluation data).
    max_tokens: int | None = None

    @classmethod
    def from_request(cls, request: ChatRequest) -> RouteInput:
        """The routing view of a request."""
        earlier = sum(1 for m in request.messages[:-1] if m.role == "user")
        return cls(request.last_user_text(), earlier, request.max_tokens)


class Router(ABC):
    """Scores a request in [0, 1]: the probability that the cheap tier answers it well enough.

    A router only scores; a :class:`~scheduler.router.policy.RoutingPolicy` turns the score
    into a tier, so one router serves features with different cost/quality targets.
    """

    name: str = "router"
    version: str = "0"

    @property
    def label(self) -> str:
        """``name@version``, recorded with every decision."""
        return f"{self.name}@{self.version}"

    @abstractmethod
    def score_input(self, item: RouteInput) -> float:
        """Score one routing input."""

    def score_inputs(self, items: Sequence[RouteInput]) -> list[float]:
        """Score many inputs; routers with a batched model override this."""
        return [self.score_input(item) for item in items]

    def score(self, request: ChatRequest) -> float:
        """Probability that the cheap tier suffices for ``request``."""
        return self.score_input(RouteInput.from_request(request))

    def score_many(self, requests: Sequence[ChatRequest]) -> list[float]:
        """Scores of several requests, batched where the router can."""
        return self.score_inputs([RouteInput.from_request(r) for r in requests])

    def score_text(self, prompt: str, history_turns: int = 0,
                   max_tokens: int | None = None) -> float:
        """Score raw prompt text (evaluation data has no full request)."""
        return self.score_input(RouteInput(prompt, history_turns, max_tokens))
