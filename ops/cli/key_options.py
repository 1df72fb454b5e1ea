"""The policy options ``sluice keys create`` and ``update`` share, and how they are read."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Optional

import typer

Models = Annotated[Optional[list[str]], typer.Option(
    "--model", help="A model or tier (cheap, flagship, self-hosted) the key may use "
                    "(repeatable; `auto` routes only inside them). Without it: any.")]
Lanes = Annotated[Optional[list[str]], typer.Option(
    "--lane", help="A lane the key may use: interactive, async (repeatable; default any).")]
Rpm = Annotated[Optional[int], typer.Option(help="The key's own requests per minute.")]
Tpm = Annotated[Optional[int], typer.Option(
    help="The key's own tokens per minute (input + output).")]
Expires = Annotated[Optional[str], typer.Option(
    help="When the key stops working: a duration (90d, 12h, 30m) or an ISO date/time.")]
Meta = Annotated[Optional[list[str]], typer.Option(
    "--meta", help="A label KEY=VALUE kept with the key (repeatable).")]
BudgetHard = Annotated[Optional[str], typer.Option(
    "--budget", help="The key's own hard budget in USD per --budget-window.")]
BudgetSoft = Annotated[Optional[str], typer.Option(
    "--budget-soft", help="Its soft threshold (an alert) in USD.")]
BudgetWindow = Annotated[str, typer.Option(
    "--budget-window", help="hourly, daily, monthly or total.")]

_SPAN = re.compile(r"^(\d+)([smhd])$")


def expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """``--expires``: a duration from now, or an absolute time (UTC unless it says)."""
    if text is None:
        return None
    now = now or datetime.now(timezone.utc)
    m = _SPAN.match(text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now + timedelta(**{unit: int(m.group(1))})
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("give a duration (90d, 12h, 30m, 45s) or an ISO date",
                                 param_hint="--expires") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def metadata(pairs: list[str] | None) -> dict[str, str] | None:
    """``--meta K=V`` pairs as a dict (None: none given)."""
    if pairs is None:
        return None
    out: dict[str, str] = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k or len(k) > 64 or len(v) > 256:
            raise typer.BadParameter("use KEY=VALUE (key up to 64, value up to 256 characters)",
                                     param_hint="--meta")
        out[k] = v
    return out


def money(text: str | None, hint: str) -> Decimal | None:
    """A USD amount given on the command line."""
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter("give an amount in USD, e.g. 25 or 0.50",
                                 param_hint=hint) from None
    if value <= 0:
        raise typer.BadParameter("must be more than 0", param_hint=hint)
    return value


def policy_of(models: list[str] | None, lanes: list[str] | None, rpm: int | None,
              tpm: int | None, expires: str | None, meta: list[str] | None) -> dict[str, Any]:
    """The ``apply_policy`` keyword arguments of the options that were given."""
    out: dict[str, Any] = {}
    if models is not None:
        out["models"] = models
    if lanes is not None:
        out["lanes"] = lanes
    if rpm is not None:
        out["rpm"] = rpm
    if tpm is not None:
        out["tpm"] = tpm
    if expires is not None:
        out["expires_at"] = expiry(expires)
    if meta is not None:
        out["metadata"] = metadata(meta)
    return out
