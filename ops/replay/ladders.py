"""Replay a trace three ways: the feature's ladder, all on one flagship, and one cheap/flagship
pair; each bill read back from the ledger, split by the trace's task labels."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from models.domain.settings import Settings
from ops.replay.levers import LeverConfig
from ops.replay.runner import RunBill, _providers, _run

#: Response cache off in every plan: the bills compare routing alone.
_ROUTING_ONLY = LeverConfig("routing", "routing only", False, True, True)


@dataclass(frozen=True)
class Plan:
    """One way to route the whole trace."""

    name: str
    label: str
    #: A model every request is sent to (None: ``auto`` as traced).
    model: str | None = None
    ladders: dict[str, Any] | None = None
    pair: tuple[str, str] | None = None


@dataclass
class PlanBill:
    """A plan's bill: totals and, per task label, requests, cost and what the ladder chose."""

    plan: Plan
    run: RunBill
    by_label: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cost(self) -> Decimal:
        """What the plan paid, from the ledger."""
        return sum((v["cost"] for v in self.by_label.values()), Decimal(0))


def plans(ladder: dict[str, Any], feature: str, flagship: str,
          pair: tuple[str, str]) -> list[Plan]:
    """The ladder, all-``flagship``, and the ``pair`` as the global tiers with ``auto``."""
    return [Plan("ladder", f"ladder ({' < '.join(ladder['rungs'])})", ladders={feature: ladder}),
            Plan("all-flagship", f"all {flagship}", model=flagship),
            Plan("pair", f"pair {pair[0]} / {pair[1]} (auto)", pair=pair)]


def plan_settings(base: Settings, plan: Plan) -> Settings:
    """``base`` with the plan's routing: its ladders, or the pair as the global tiers."""
    update: dict[str, Any] = {"ladders": plan.ladders or {}, "ladders_path": None}
    if plan.pair is not None:
        update.update(cheap_model=plan.pair[0], flagship_model=plan.pair[1])
    return base.model_copy(update={"routing": base.routing.model_copy(update=update)})


def replay_ladders(trace: list[dict[str, Any]], plan_list: list[Plan], *,
                   home: Path = Path(".sluice/replay-ladders"), concurrency: int = 8,
                   timeout_s: float = 120.0, env: dict[str, str] | None = None
                   ) -> list[PlanBill]:
    """Send ``trace`` once per plan through embedded services and the stand-in."""
    from ops.demo import demo_settings
    from ops.db import upgrade

    run_id = uuid.uuid4().hex[:8]
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    db = home / "ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    base = demo_settings(home, env)
    base = base.model_copy(update={
        "database": base.database.model_copy(update={"url": f"sqlite:///{db}"}),
        "cache": base.cache.model_copy(update={"enabled": False, "redis_url": None})})
    upgrade(base.database.url)
    labels = [str((d.get("tags") or {}).get("label", "unlabelled")) for d in trace]
    out = []
    with _providers(base, False) as (settings, standin):
        for plan in plan_list:
            standin.reset()
            requests = [dict(d, model=plan.model) if plan.model else d for d in trace]
            bill = RunBill(config=_ROUTING_ONLY, prefix=f"rl-{run_id}-{plan.name}-")
            _run(requests, bill, plan_settings(settings, plan), live=False,
                 salt=f"ladders {run_id} {plan.name}", concurrency=concurrency,
                 timeout_s=timeout_s, tick=lambda: None)
            out.append(PlanBill(plan, bill, _by_label(settings, bill.prefix, labels)))
    return out


def _by_label(settings: Settings, prefix: str, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per trace label: requests, cost, and the models and task types the ledger recorded."""
    from sqlalchemy import select

    from models.db.tables import LedgerRow
    from queues.wiring import ledger_sessions

    sessions = ledger_sessions(settings)
    out: dict[str, dict[str, Any]] = {}
    try:
        with sessions() as s:
            rows = s.execute(select(LedgerRow.request_id, LedgerRow.cost, LedgerRow.model,
                                    LedgerRow.task_type)
                             .where(LedgerRow.request_id.startswith(prefix))).all()
    finally:
        bind = sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
    for rid, cost, model, task_type in rows:
        label = labels[int(rid[len(prefix):])]
        line = out.setdefault(label, {"requests": 0, "cost": Decimal(0), "models": {},
                                      "task_types": {}})
        line["requests"] += 1
        line["cost"] += Decimal(cost)
        line["models"][model] = line["models"].get(model, 0) + 1
        key = task_type or "-"
        line["task_types"][key] = line["task_types"].get(key, 0) + 1
    return out


def summary(bills: list[PlanBill]) -> dict[str, Any]:
    """JSON-safe figures: each plan's bill, its ratio to the ladder's, and per-label lines."""
    ladder = next((b.cost for b in bills if b.plan.name == "ladder"), None)
    total = sum(v["requests"] for v in bills[0].by_label.values()) if bills else 0
    out: dict[str, Any] = {"requests": total, "plans": []}
    for b in bills:
        out["plans"].append({
            "plan": b.plan.name, "label": b.plan.label, "cost": format(b.cost, "f"),
            "completed": b.run.completed, "failed": b.run.failed,
            "ladder_saves": (None if not ladder or not b.cost or b.plan.name == "ladder"
                             else format(1 - ladder / b.cost, ".4f")),
            "by_task_type": {
                k: {"requests": v["requests"],
                    "share": round(v["requests"] / total, 4) if total else 0.0,
                    "cost": format(v["cost"], "f"),
                    "cost_share": (round(float(v["cost"] / b.cost), 4) if b.cost else 0.0),
                    "models": v["models"], "routed_task_types": v["task_types"]}
                for k, v in sorted(b.by_label.items())}})
    return out
