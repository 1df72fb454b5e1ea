"""Budget arithmetic: scopes and orgs, windows and resets, which budgets apply, hard limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Sequence

from models.domain.errors import BudgetExceeded, ValidationError
from models.domain.request import LANES

if TYPE_CHECKING:
    from models.domain.request import ChatRequest

#: What a budget can be attached to, in the order a refusal names them (widest first).
#: ``key``: one API key's own budget (its id is the key), set with ``sluice keys create``.
SCOPES: tuple[str, ...] = ("org", "lane", "team", "feature", "user", "key")
WINDOWS: tuple[str, ...] = ("hourly", "daily", "monthly", "total")
#: The org of a deployment-wide budget (a lane budget set without ``--org``): it applies to
#: every org, and only its exhaustion pauses the shared queues. No org name can be ``*``.
DEPLOYMENT = "*"
#: The org of requests and keys that name none.
DEFAULT_ORG = "default"


def qualified(org: str, name: str) -> str:
    """``name`` as operators read it across orgs: ``org/name`` unless the org is the default."""
    return name if org == DEFAULT_ORG else f"{org}/{name}"
_BACKENDS: tuple[str, ...] = ("api", "gpu")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: The rule ChatRequest applies to org names (so ``*`` is never one).
_ORG_NAME = re.compile(r"^[A-Za-z0-9._:\-/]{1,64}$")


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
    #: Whose budget it is: an org name, or DEPLOYMENT; "" takes the scope's default
    #: (:func:`default_org`). An org budget's org is its key.
    org: str = ""

    def __post_init__(self) -> None:
        if self.scope == "org" or not self.org:
            object.__setattr__(self, "org", default_org(self.scope, self.key))

    @property
    def name(self) -> str:
        """``scope:key:window``, prefixed ``org/`` unless the org is the scope's default
        (``default`` for team, feature and user; every org for a lane): how logs, errors and
        the CLI name a budget."""
        base = f"{self.scope}:{self.key}:{self.window}"
        return base if self.org == default_org(self.scope, self.key) else f"{self.org}/{base}"

    @property
    def pauses(self) -> bool:
        """Whether reaching this budget's hard limit pauses shared queues: only a
        deployment-wide lane budget does; any other stops its own scope at admission and at
        the worker's second check, never another org's work."""
        return self.scope == "lane" and self.org == DEPLOYMENT

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


def default_org(scope: str, key: str) -> str:
    """The org a budget set without one belongs to: an org budget's own key, every org
    (DEPLOYMENT) for a lane, the ``default`` org for team, feature and user."""
    if scope == "org":
        return key
    return DEPLOYMENT if scope == "lane" else DEFAULT_ORG


def check_scope(scope: str, key: str, org: str | None = None) -> None:
    """Raise a ValidationError unless ``scope``/``key`` (in ``org``) name something a request
    can carry."""
    if scope not in SCOPES:
        raise ValidationError(f"unknown budget scope {scope!r}; use one of {', '.join(SCOPES)}",
                              field="scope")
    if not key or len(key) > 64:
        raise ValidationError("a budget key is the org, lane, team, feature or user name "
                              "(1-64 characters)", field="key")
    if scope == "lane" and key not in LANES:
        raise ValidationError(f"unknown lane {key!r}; use one of {', '.join(LANES)}", field="key")
    if org is None:
        return
    if scope == "org" and org != key:
        raise ValidationError(f"an org budget belongs to its own org: drop --org, or set it on "
                              f"org {org!r} with `sluice budget set org {org} ...`", field="org")
    if org == DEPLOYMENT and scope != "lane":
        raise ValidationError(f"a {scope} budget belongs to one org (team, feature and user "
                              "names are chosen per org); name it with --org, or cap the whole "
                              "deployment with a lane budget", field="org")
    if org != DEPLOYMENT and not _ORG_NAME.match(org):
        raise ValidationError(f"org {org!r} is not an org name (1-64 letters, digits or ._:-/)",
                              field="org")


def check_window(window: str) -> None:
    """Raise a ValidationError unless ``window`` is a known window."""
    if window not in WINDOWS:
        raise ValidationError(f"unknown budget window {window!r}; use one of {', '.join(WINDOWS)}",
                              field="window")


def scope_value(request: ChatRequest, scope: str) -> str | None:
    """The key ``request`` has in ``scope`` (None when it has none, e.g. no user)."""
    return {"org": request.org, "lane": request.lane, "team": request.team,
            "feature": request.feature, "user": request.user,
            # What the outbox replays is a ledger row, which names no key.
            "key": getattr(request, "api_key", None)}.get(scope)


def request_keys(request: ChatRequest) -> list[tuple[str, str, str]]:
    """Every (org, scope, key) a budget of ``request`` has: its own org's, and the
    deployment-wide ones of its lane. Nothing of another org ever matches. A shadow or judge
    request of the quality guard matches its feature's shadow budget only: it is bounded by a
    budget of its own, and never takes room from the traffic it measures."""
    from models.domain.quality import PURPOSE_TAG, shadow_budget_key

    if (getattr(request, "tags", None) or {}).get(PURPOSE_TAG, "serve") != "serve":
        return [(request.org, "feature", shadow_budget_key(request.feature))]
    refs = []
    for scope in SCOPES:
        value = scope_value(request, scope)
        if value is not None:
            refs.append((request.org, scope, value))
    refs.append((DEPLOYMENT, "lane", request.lane))
    return refs


def applicable(budgets: Sequence[Budget], request: ChatRequest) -> list[Budget]:
    """The budgets that apply to ``request``, widest scope first."""
    keys = set(request_keys(request))
    found = [b for b in budgets if (b.org, b.scope, b.key) in keys]
    return sorted(found, key=lambda b: (SCOPES.index(b.scope), WINDOWS.index(b.window), b.id))


def reservation_lease(time_limit_s: float, margin_s: float) -> timedelta:
    """How long a reservation is held past its last renewal: its lane's time limit (a live
    run renews it sooner) and a margin for a missed heartbeat or two. The admission's lease
    and the worker's renewals are both this."""
    return timedelta(seconds=time_limit_s + margin_s)


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


def pause_queues(budget: Budget) -> tuple[str, ...]:
    """Queues to pause when ``budget`` hits its hard limit (may be none).

    Queues are shared by every org, split by lane and backend only, so only a deployment-wide
    lane budget pauses them; an org's own limit (its org, lane, team, feature or user budget)
    refuses that org's requests at admission and at the worker's second check instead.
    """
    if not budget.pauses:
        return ()
    return tuple(f"{budget.key}.{b}" for b in _BACKENDS)


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
        f"--window {budget.window}{org_option(budget)} --hard <usd>`",
        budget=budget.name, scope=budget.scope, key=budget.key, window=budget.window,
        org=budget.org,
        limit=plain(budget.hard_limit), spent=plain(budget.spent),
        reserved=plain(budget.reserved), requested=plain(amount),
        resets_at=None if budget.resets_at is None else budget.resets_at.isoformat())


def org_option(budget: Budget) -> str:
    """`` --org X`` when the CLI needs it to name ``budget`` (empty for the scope's default)."""
    return "" if budget.org == default_org(budget.scope, budget.key) else f" --org {budget.org}"


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
