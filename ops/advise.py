"""The cost advisor: read the ledger and say, per feature, which lever would pay off and how
much a month, each line with its assumption and its estimate."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.db.tables import JudgementRow, LedgerRow
from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.cost import cost_of
from models.domain.quality import wilson
from models.domain.usage import Usage

_MONTH = Decimal(30)
BATCH_PROVIDERS = ("openai", "anthropic")


@dataclass(frozen=True)
class Advice:
    """One lever for one feature: what to do, what it assumes, and USD per month it saves."""

    feature: str
    lever: str
    action: str
    assumption: str
    #: Saved over the window read (the ledger's own figures with the lever applied).
    window_saving: Decimal
    monthly: Decimal
    #: model-price: the model it proposes.
    model: str = ""
    #: The org whose feature it is (feature names are each org's own).
    org: str = "default"

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (money as strings)."""
        return {"org": self.org, "feature": self.feature, "lever": self.lever,
                "action": self.action,
                "assumption": self.assumption, "window_saving": str(self.window_saving),
                "monthly_usd": str(self.monthly),
                **({"model": self.model} if self.model else {})}


def advise(session: Session, catalogue: Catalogue, *, since: datetime,
           feature: str | None = None, org: str | None = None,
           now: datetime | None = None) -> list[Advice]:
    """Every lever with a saving, most dollars a month first; ``org``: that org's features
    only (else every org's, each apart: two orgs' features of one name never add up)."""
    now = now or datetime.now(timezone.utc)
    days = Decimal(max((now - since).total_seconds(), 3600.0)) / Decimal(86400)
    scale = _MONTH / days
    orgs = [org] if org is not None else list(session.scalars(
        select(LedgerRow.org).where(LedgerRow.created_at >= since).distinct()))
    out = [replace(a, monthly=(a.window_saving * scale).quantize(Decimal("0.01")), org=o)
           for o in orgs for a in _levers(session, catalogue, since, feature, o)
           if a.window_saving > 0]
    return sorted(out, key=lambda a: (-a.monthly, a.org, a.feature, a.lever))


def _levers(session: Session, catalogue: Catalogue, since: datetime, feature: str | None,
            org: str) -> list[Advice]:
    """Each lever's lines for one org's features, over the window."""
    from ops.advise_prefix import stable_prefixes
    from ops.advise_text import short_prefixes, text_rows, volatile_repeats

    rows = list(_rows(session, since, feature, org))
    texts = text_rows(session, since, feature, org)
    return [*_batch(rows, catalogue), *stable_prefixes(rows, texts, catalogue), *_repeats(rows),
            *volatile_repeats(texts), *short_prefixes(texts, catalogue),
            *_model_prices(rows, catalogue), *_flagship_share(session, since, feature, org)]


def _rows(session: Session, since: datetime, feature: str | None, org: str) -> Any:
    stmt = select(LedgerRow).where(LedgerRow.created_at >= since, LedgerRow.outcome == "ok",
                                   LedgerRow.purpose == "serve", LedgerRow.kind == "chat",
                                   LedgerRow.org == org)
    if feature is not None:
        stmt = stmt.where(LedgerRow.feature == feature)
    return session.scalars(stmt.execution_options(yield_per=1000))


def _usage(r: LedgerRow) -> Usage:
    return Usage(input_uncached=r.input_uncached, cache_read=r.cache_read,
                 cache_write_5m=r.cache_write_5m, cache_write_1h=r.cache_write_1h,
                 output=r.output)


def _spec(catalogue: Catalogue, name: str) -> ModelSpec | None:
    return catalogue.models.get(name)


def _batch(rows: list[LedgerRow], catalogue: Catalogue) -> list[Advice]:
    """Async-lane answers from a hosted provider that did not go through its Batch API."""
    saved: dict[str, Decimal] = defaultdict(Decimal)
    count: dict[str, int] = defaultdict(int)
    for r in rows:
        spec = _spec(catalogue, r.model)
        if r.lane != "async" or r.batch or spec is None or spec.provider not in BATCH_PROVIDERS:
            continue
        saved[r.feature] += r.cost - cost_of(_usage(r), spec, batch=True)
        count[r.feature] += 1
    return [Advice(f, "batch-api", f"send its {count[f]} async requests through the provider "
                   f"Batch API (SLUICE_BATCH__FEATURES=[\"{f}\"])",
                   "the same tokens at the provider's batch discount; answers may take up to "
                   "24 h", v, Decimal(0)) for f, v in saved.items()]


def _repeats(rows: list[LedgerRow]) -> list[Advice]:
    """Prompts answered again in full that an earlier row of the feature had answered already
    (identical prompt hash and model): the response cache missed them (off, bypassed, or
    expired)."""
    seen: set[tuple[str, str, str]] = set()
    saved: dict[str, Decimal] = defaultdict(Decimal)
    count: dict[str, int] = defaultdict(int)
    for r in sorted(rows, key=lambda r: r.id or 0):
        if not r.prompt_hash:
            continue
        key = (r.feature, r.model, r.prompt_hash)
        if key in seen and not r.cache_hit:
            saved[r.feature] += r.cost
            count[r.feature] += 1
        seen.add(key)
    return [Advice(f, "response-cache", f"answer its {count[f]} exact repeats from the response "
                   "cache (check SLUICE_CACHE__FEATURES: its TTL, and callers' cache mode)",
                   "every repeat of a prompt already answered on the same model is a $0 hit",
                   v, Decimal(0)) for f, v in saved.items()]


def _model_prices(rows: list[LedgerRow], catalogue: Catalogue) -> list[Advice]:
    """A model of the same tier whose current prices make the same tokens cheaper."""
    spent: dict[tuple[str, str], list[LedgerRow]] = defaultdict(list)
    for r in rows:
        spent[(r.feature, r.model)].append(r)
    out = []
    for (feature, model), group in spent.items():
        spec = _spec(catalogue, model)
        if spec is None:
            continue
        # A reasoning model bills thinking the current model's ledger rows cannot foresee:
        # it is never proposed for a model that does not reason.
        peers = [m for m in catalogue.models.values() if m.tier == spec.tier and m.kind == "chat"
                 and m.name != model and m.backend == spec.backend
                 and (spec.can("reasoning") or not m.can("reasoning"))]
        paid = sum((r.cost for r in group), Decimal(0))
        best, best_cost = None, paid
        for peer in peers:
            cost = sum((cost_of(Usage(input_uncached=r.input_uncached + r.cache_read
                                      + r.cache_write_5m + r.cache_write_1h, output=r.output),
                                peer, batch=r.batch) for r in group), Decimal(0))
            if cost < best_cost:
                best, best_cost = peer, cost
        if best is not None:
            out.append(Advice(feature, "model-price", f"serve its {spec.tier} tier with "
                              f"{best.name} instead of {model} at catalogue version "
                              f"{catalogue.version}",
                              "the same tokens at the other model's list price, no prompt "
                              "caching, reasoning models left out (quality not compared: "
                              "shadow it first)",
                              paid - best_cost, Decimal(0), best.name))
    return out


def _flagship_share(session: Session, since: datetime, feature: str | None,
                    org: str) -> list[Advice]:
    """Features whose flagship answers the cheap tier matched, with high confidence."""
    stmt = (select(JudgementRow.feature, func.count(),
                   func.sum(func.cast(JudgementRow.agree, _int())),
                   func.coalesce(func.sum(JudgementRow.served_cost - JudgementRow.shadow_cost), 0))
            .where(JudgementRow.created_at >= since, JudgementRow.served_tier == "flagship",
                   JudgementRow.agree.is_not(None), JudgementRow.org == org)
            .group_by(JudgementRow.feature))
    if feature is not None:
        stmt = stmt.where(JudgementRow.feature == feature)
    out = []
    for f, n, agree, diff in session.execute(stmt):
        lo, _ = wilson(int(agree or 0), int(n))
        served = session.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.org == org, LedgerRow.feature == f, LedgerRow.tier == "flagship",
            LedgerRow.purpose == "serve", LedgerRow.created_at >= since)) or 0
        if lo < 0.9 or not n:
            continue
        per_pair = Decimal(diff) / int(n)
        out.append(Advice(f, "flagship-share", f"lower its flagship share: {agree}/{n} judged "
                          f"flagship answers were matched by the cheap tier (lower bound "
                          f"{lo:.0%})", "the share of flagship traffic the cheap tier matched "
                          "moves to it, at the shadows' measured cost difference",
                          per_pair * Decimal(served) * Decimal(lo).quantize(Decimal("0.0001")),
                          Decimal(0)))
    return out


def budget_warnings(session: Session, now: datetime | None = None,
                    org: str | None = None) -> list[str]:
    """Budgets (``org``'s and the deployment-wide ones, if given) whose spend rate this window
    runs out before the window resets, with the date."""
    from models.db.budgets import list_budgets
    from models.domain.budget import DEPLOYMENT

    now = now or datetime.now(timezone.utc)
    lines = []
    for b in list_budgets(session):
        if org is not None and b.org not in (org, DEPLOYMENT):
            continue
        start = b.window_start if b.window_start.tzinfo else b.window_start.replace(
            tzinfo=timezone.utc)
        elapsed = (now - start).total_seconds()
        if elapsed <= 0 or b.spent <= 0:
            continue
        rate = b.spent / Decimal(elapsed)
        left = b.hard_limit - b.spent - b.reserved
        when = now + timedelta(seconds=float(max(left, Decimal(0)) / rate))
        resets = b.resets_at if b.resets_at is None or b.resets_at.tzinfo else \
            b.resets_at.replace(tzinfo=timezone.utc)
        if resets is None or when < resets:
            lines.append(f"budget {b.name}: at this window's rate (${rate * 3600:.4f}/h) it is "
                         f"exhausted on {when:%Y-%m-%d %H:%M} UTC"
                         + ("" if resets is None else f", before it resets {resets:%Y-%m-%d}"))
    return lines


def _int() -> Any:
    from sqlalchemy import Integer

    return Integer
