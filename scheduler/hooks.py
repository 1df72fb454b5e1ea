"""The interfaces the request pipeline calls at each lever, so each lever plugs in on its own."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from models.domain.request import ChatRequest
from models.domain.result import ChatResult, Route

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Admission(Protocol):
    """Budget admission: reserve a worst-case cost before dispatch, settle it after."""

    def reserve(self, request: ChatRequest, route: Route, amount: Decimal, *,
                within: Callable[[], Any] | None = None) -> str | None:
        """Reserve ``amount`` against every applicable budget, all or nothing.

        ``within`` (the rate windows) runs once inside the reservation, before it is held;
        if it raises, nothing is held. Returns a reservation id (None when no budget
        applies) or raises BudgetExceeded.
        """
        ...

    def settle(self, reservation_id: str, actual: Decimal, session: Session | None = None,
               request: ChatRequest | None = None) -> bool:
        """Turn the reservation into spend of ``actual``; exactly once (False if already done).

        With ``session`` the change joins that transaction (the worker's ledger write); with
        ``request``, budgets set after the reservation are charged too.
        """
        ...

    def charge(self, request: ChatRequest, actual: Decimal, session: Session | None = None
               ) -> None:
        """Spend ``actual`` on the budgets of a request that holds no reservation."""
        ...

    def cover(self, reservation_id: str, amount: Decimal, request: ChatRequest,
              route: Route) -> bool:
        """Make the open reservation hold ``amount`` on every budget that applies now (False:
        it is no longer open); raises BudgetExceeded naming the budget without room."""
        ...

    def release(self, reservation_id: str, session: Session | None = None) -> bool:
        """Drop the reservation without spending (the call failed or was never sent)."""
        ...

    def confirm(self, request: ChatRequest, route: Route, reservation_id: str | None,
                amount: Decimal) -> str | None:
        """The worker's second check before the provider call: the reservation id to settle.

        Raises QueuePaused when the queue was paused meanwhile, BudgetExceeded when the
        money is no longer held and no longer fits (expired reservation, lowered limit).
        """
        ...


class ResponseCache(Protocol):
    """The response cache, looked up before routing and filled after a provider call."""

    def lookup(self, request: ChatRequest) -> ChatResult | None:
        """A stored result for an equivalent request, or None (also when the store is down)."""
        ...

    def store(self, request: ChatRequest, result: ChatResult) -> None:
        """Keep ``result`` for equivalent requests, if the policy allows."""
        ...

    def abandon(self, request: ChatRequest) -> None:
        """Give up a single-flight claim taken by ``lookup`` (the request was refused)."""
        ...


class PauseBook(Protocol):
    """Which queues are paused, and why (the governor and operators write it)."""

    def paused(self, queue: str) -> str | None:
        """The reason ``queue`` is paused, or None."""
        ...
