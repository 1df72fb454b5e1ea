"""The routing decision and the result a request ends with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.domain.request import ToolCall
from models.domain.usage import Usage

Backend = Literal["api", "gpu"]


class Route(BaseModel):
    """Where a request goes: tier, model, provider, backend and lane, and why."""

    model_config = ConfigDict(frozen=True)

    tier: str
    model: str
    provider: str
    backend: Backend
    lane: str
    reason: str = ""
    #: The router's score (probability the cheap tier suffices), when a router decided.
    score: float | None = None
    #: Parameters left out because the model cannot honour them and the caller allowed it.
    dropped: tuple[str, ...] = ()
    #: A feature ladder's decision: the task type, the rung (its index in the ladder climbed:
    #: the task type's own, else the feature's; weakest 0) and the stronger rungs a failing
    #: call may climb to.
    task_type: str | None = None
    rung: int | None = None
    escalation: tuple[str, ...] = ()

    @property
    def queue(self) -> str:
        """The Celery queue that serves this route, ``<lane>.<backend>``."""
        return f"{self.lane}.{self.backend}"


class Timings(BaseModel):
    """Milliseconds spent in each stage of one request."""

    model_config = ConfigDict(frozen=True)

    queued_ms: float = 0.0
    provider_ms: float = 0.0
    total_ms: float = 0.0


class ChatResult(BaseModel):
    """What a request produced, what it cost, and what it would have cost with no lever."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    text: str
    provider: str
    model: str
    route: Route
    usage: Usage = Usage()
    cost: Decimal = Field(default=Decimal(0))
    baseline_cost: Decimal = Field(default=Decimal(0))
    #: The routed model's list price for the same tokens: no prompt caching, no batch discount.
    list_cost: Decimal = Field(default=Decimal(0))
    cache_hit: bool = False
    finish_reason: str = "stop"
    price_version: str = ""
    timings: Timings = Timings()
    #: Calls to the request's tools the model made instead of (or beside) answering in text.
    tool_calls: tuple[ToolCall, ...] = ()
    #: Per-token log probabilities (OpenAI's ``logprobs.content``), when asked for.
    logprobs: tuple[dict[str, Any], ...] | None = None

    @property
    def saved(self) -> Decimal:
        """Baseline minus actual cost: what the levers saved on this request."""
        return self.baseline_cost - self.cost
