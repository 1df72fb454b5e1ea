"""Budget arithmetic: scopes, windows and resets, which budgets apply, soft and hard limits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Sequence

from models.domain.errors import BudgetExceeded, ValidationError
from models.domain.request import LANES

if TYPE_CHECKING:
    from models.domain.request import ChatRequest

#: What a budget can be attached to, in the order a refusal names them (widest first).
SCOPES: tuple[str, ...] = ("org", "lane", "team", "feature", "user")
WINDOWS: tuple[str, ...] = ("hourly", "daily", "monthly", "total")
#: Scopes whose exhaustion pauses shared queues; narrower ones only refuse at admission.
PAUSING_SCOPES: tuple[str, ...] = ("org", "lane")
_BACKENDS: tuple[str, ...] = ("api", "gpu")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Budget:
    """One budget and its current window: hard limit, optional soft threshold, spent, reserved."""

    scope: str
    key: str
    window: str
    hard_limit: Decimal
    soft_limit: Decimal | None = None
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    window_start: datetime = _EPOCH
    resets_at: datetime | None = None
    id: int = 0
    webhook_url: str | None = None

    @property
    def name(self) -> str:
        """``scope:key:window``, how logs, errors and the CLI name a budget."""
        return f"{self.scope}:{self.key}:{self.window}"

    @property
    def room(self) -> Decimal:
        """What is left for new reservations (negative if the limit was lowered below use)."""
        return self.hard_limit - self.spent - self.reserved

    def fits(self, amount: Decimal) -> bool:
        """Whether a reservation of ``amount`` keeps spent plus reserved within the hard limit."""
        return self.spent + self.reserved + amount <= self.hard_limit

    def soft_reached(self) -> bool:
        """Whether settled spend has reached the soft threshold."""
        return self.soft_limit is not None and self.spent >= self.soft_limit


def check_scope(scope: str, key: str) -> None:
    """Raise a ValidationError unless ``scope``/``key`` name something a request can carry."""
    if scope not in SCOPES:
        raise ValidationError(f"unknown budget scope {scope!r}; use one of {', '.join(SCOPES)}",
                              field="scope")
    if not key or len(key) > 64:
        raise ValidationError("a budget key is the org, lane, team, feature or user name "
                              "(1-64 characters)", field="key")
    if scope == "lane" and key not in LANES:
        raise ValidationError(f"unknown lane {key!r}; use one of {', '.join(LANES)}", field="key")


def check_window(window: str) -> None:
    """Raise a ValidationError unless ``window`` is a known window."""
    if window not in WINDOWS:
        raise ValidationError(f"unknown budget window {window!r}; use one of {', '.join(WINDOWS)}",
                              field="window")


def scope_value(request: ChatRequest, scope: str) -> str | None:
    """The key ``request`` has in ``scope`` (None when it has none, e.g. no user)."""
    return {"org": request.org, "lane": request.lane, "team": request.team,
            "feature": request.feature, "user": request.user}.get(scope)


def request_keys(request: ChatRequest) -> list[tuple[str, str]]:
    """Every (scope, key) pair of ``request``: the budgets with these pairs apply to it."""
    pairs = []
    for scope in SCOPES:
        value = scope_value(request, scope)
        if value is not None:
            pairs.append((scope, value))
    return pairs


def applicable(budgets: Sequence[Budget], request: ChatRequest) -> list[Budget]:
    """The budgets that apply to ``request``, widest scope first."""
    keys = set(request_keys(request))
    found = [b for b in budgets if (b.scope, b.key) in keys]
    return sorted(found, key=lambda b: (SCOPES.index(b.scope), WINDOWS.index(b.window), b.id))


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime | None]:
    """Start of the window holding ``now`` (UTC) and when it resets (None: it never does)."""
    check_window(window)
    now = now.astimezone(timezone.utc)
    if window == "hourly":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if window == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if window == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 \
            else start.replace(month=start.month + 1)
        return start, nxt
    return now, None


def rolled(budget: Budget, now: datetime) -> Budget:
    """``budget`` moved to the window holding ``now``: spend starts again, reservations stay."""
    if budget.resets_at is None or now < budget.resets_at:
        return budget
    start, resets = window_bounds(budget.window, now)
    return replace(budget, spent=Decimal(0), window_start=start, resets_at=resets)


def pause_queues(scope: str, key: str) -> tuple[str, ...]:
    """Queues to pause when the budget ``scope``/``key`` hits its hard limit (may be none)."""
    if scope == "lane":
        return tuple(f"{key}.{b}" for b in _BACKENDS)
    if scope == "org":
        # Queues are shared by every org, split by lane and backend only: an exhausted org
        # budget stops all of them (the worker's second check refuses other orgs' work too).
        return tuple(f"{lane}.{b}" for lane in LANES for b in _BACKENDS)
    return ()


# --- pure transitions: the reference model the SQL implementations are tested against ---


def reserve_all(budgets: Sequence[Budget], amount: Decimal) -> list[Budget]:
    """Each budget with ``amount`` more reserved, or BudgetExceeded naming the first one full."""
    if amount < 0:
        raise ValueError("a reservation cannot be negative")
    for b in budgets:
        if not b.fits(amount):
            raise refusal(b, amount)
    return [replace(b, reserved=b.reserved + amount) for b in budgets]


def settle_one(budget: Budget, amount: Decimal, actual: Decimal, *, held: bool = True) -> Budget:
    """``budget`` after a reservation of ``amount`` became a spend of ``actual``.

    ``held`` is False when the reservation had already expired (its amount was released).
    """
    return replace(budget, spent=budget.spent + actual,
                   reserved=budget.reserved - amount if held else budget.reserved)


def release_one(budget: Budget, amount: Decimal) -> Budget:
    """``budget`` after a reservation of ``amount`` was dropped without spending."""
    return replace(budget, reserved=budget.reserved - amount)


def refusal(budget: Budget, amount: Decimal) -> BudgetExceeded:
    """The error a refused request gets: which budget, its numbers, when it resets, what to do."""
    if budget.resets_at is None:
        when = "this total budget never resets"
    else:
        when = f"its {budget.window} window resets at {budget.resets_at.isoformat()}"
    return BudgetExceeded(
        f"budget {budget.name} cannot take this request: it needs up to {usd(amount)} but the "
        f"hard limit is {usd(budget.hard_limit)} with {usd(budget.spent)} spent and "
        f"{usd(budget.reserved)} reserved; {when}. Nothing was sent. Lower max_tokens, pick a "
        f"cheaper model, or raise the limit: `sluice budget set {budget.scope} {budget.key} "
        f"--window {budget.window} --hard <usd>`",
        budget=budget.name, scope=budget.scope, key=budget.key, window=budget.window,
        limit=plain(budget.hard_limit), spent=plain(budget.spent),
        reserved=plain(budget.reserved), requested=plain(amount),
        resets_at=None if budget.resets_at is None else budget.resets_at.isoformat())


def _fmt(value: Decimal) -> str:
    return f"{value:,.6f}" if abs(value) < 100 else f"{value:,.2f}"


def usd(value: Decimal | None) -> str:
    """``value`` for people: ``$0.001234``, ``$1,250.00``; ``-`` when unset."""
    return "-" if value is None else "$" + _fmt(value)


def plain(value: Decimal) -> str:
    """``value`` exactly, without exponent or trailing zeros (``0E-12`` becomes ``0``)."""
    return format(value.normalize(), "f") if value else "0"


def parse_usd(text: str | Decimal, what: str = "amount") -> Decimal:
    """A non-negative, finite USD amount from ``text`` (``$`` and ``,`` allowed), never a float."""
    raw = str(text).strip().replace("$", "").replace(",", "").replace("_", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValidationError(f"{what} {text!r} is not a USD amount; write it like 12.50",
                              field=what) from None
    if not value.is_finite() or value < 0:
        raise ValidationError(f"{what} must be a non-negative USD amount, got {text!r}",
                              field=what)
    return value


def parse_soft(text: str | None, hard: Decimal) -> Decimal | None:
    """The soft threshold from ``80%`` (of ``hard``) or an absolute USD amount; None if unset."""
    if text is None or str(text).strip() == "":
        return None
    raw = str(text).strip()
    if raw.endswith("%"):
        share = parse_usd(raw[:-1], "soft")
        if share > 100:
            raise ValidationError("a soft threshold above 100% of the hard limit never fires; "
                                  "use a share up to 100%", field="soft")
        return hard * share / 100
    soft = parse_usd(raw, "soft")
    if soft > hard:
        raise ValidationError(f"the soft threshold ${soft} is above the hard limit ${hard}, so it "
                              "would never fire; set it lower", field="soft")
    return soft
