"""Judge a (served, shadow) pair by the feature's declared judge, then apply the floor."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

from models.db import quality as repo
from models.domain import judges
from models.domain.judges import Verdict
from models.domain.request import ChatRequest, Message
from models.domain.result import ChatResult
from queues.envelope import Envelope
from scheduler import quality_floor
from workers.runtime import WorkerRuntime
from workers.shadow import derived, send

log = logging.getLogger("sluice.quality")
_EMBEDDER: Any = None
_EMBED_LOCK = threading.Lock()


def judge_pair(rt: WorkerRuntime, env: Envelope, result: ChatResult) -> None:
    """Judge a shadow's answer against the served one it shadows: at once for the exact, JSON
    and embedding judges; by two LLM votes (one per order) for the LLM judge."""
    req, pair = env.request, env.pair or {}
    guard = rt.settings.quality.for_feature(req.feature)
    if guard is None:
        return
    served = str(pair.get("served_text", ""))
    values = {"request_id": pair["of"], "org": req.org, "team": req.team,
              "feature": req.feature, "served_tier": pair["served_tier"],
              "served_model": pair["served_model"], "shadow_model": result.model,
              "judge": guard.judge, "served_cost": Decimal(str(pair.get("served_cost", "0"))),
              "shadow_cost": result.cost, "task_type": pair.get("task_type"),
              "served_rung": pair.get("served_rung"), "shadow_rung": pair.get("shadow_rung")}
    if guard.judge == "llm":
        with rt.session() as s:
            opened = repo.open_judgement(s, values)
            s.commit()
        if opened:
            _ask_judge(rt, env, served, result.text, guard)
        return
    verdict = verdict_of(guard, served, result.text, rt.settings.quality.embedding_model)
    _decided(rt, req.org, req.feature, {**values, "agree": verdict.agree, "score": verdict.score,
                               "detail": verdict.detail})


def verdict_of(guard: Any, served: str, shadow: str, embedding_model: str = "") -> Verdict:
    """The exact, JSON or embedding judge's verdict on one pair."""
    if guard.judge == "exact":
        return judges.exact(served, shadow)
    if guard.judge == "json":
        return judges.json_fields(served, shadow, guard.json_fields)
    if guard.judge == "embedding":
        a, b = embed([served, shadow])
        return judges.similarity(a, b, guard.similarity_floor)
    raise ValueError(f"judge {guard.judge!r} has no immediate verdict")


def embed(texts: list[str]) -> list[list[float]]:
    """Self-hosted MiniLM embeddings (the router's embedder: no provider bill)."""
    global _EMBEDDER
    with _EMBED_LOCK:
        if _EMBEDDER is None:
            from scheduler.router.embedder import Embedder

            _EMBEDDER = Embedder(max_tokens=256).load()
        return [list(map(float, v)) for v in _EMBEDDER.embed(texts)]


def _ask_judge(rt: WorkerRuntime, env: Envelope, served: str, shadow: str, guard: Any) -> None:
    """Two judge requests, served answer first then second, on the shadow budget."""
    req = env.request
    prompt = req.last_user_text()
    model = rt.settings.quality.judge_model
    for position, (first, second) in (("first", (served, shadow)), ("second", (shadow, served))):
        ask = derived(ChatRequest(
            request_id=req.request_id, org=req.org, team=req.team, feature=req.feature,
            user=req.user, messages=(Message(role="user",
                                             content=judges.rubric(prompt, first, second)),),
            max_tokens=8, temperature=0.0), f"judge-{position}", model=model,
            purpose="judge")
        send(rt, ask, {"role": "judge", "of": (env.pair or {})["of"], "position": position},
             guard)


def count_vote(rt: WorkerRuntime, env: Envelope, result: ChatResult) -> None:
    """Record one LLM vote; the second one decides the pair (position-swapped)."""
    req, pair = env.request, env.pair or {}
    vote = judges.parse_vote(result.text)
    with rt.session() as s:
        row = repo.add_vote(s, org=req.org, team=req.team, request_id=pair["of"],
                            position=str(pair["position"]),
                            vote=False if vote is None else vote, cost=result.cost)
        s.commit()
        if row is None or row.vote_first is None or row.vote_second is None:
            return
        verdict = judges.combine(row.vote_first, row.vote_second)
        if not repo.decide(s, row.id, agree=verdict.agree, score=verdict.score,
                           detail=verdict.detail):
            s.commit()
            return
        move = quality_floor.evaluate(s, rt.settings, req.org, req.feature)
        s.commit()
    if move is not None:
        quality_floor.alert(rt.settings, move)


def _decided(rt: WorkerRuntime, org: str, feature: str, values: dict[str, Any]) -> None:
    """Store a decided judgement and apply the floor to its org's feature in one
    transaction."""
    with rt.session() as s:
        if not repo.open_judgement(s, values):
            return  # a redelivered shadow: judged already
        move = quality_floor.evaluate(s, rt.settings, org, feature)
        s.commit()
    if move is not None:
        quality_floor.alert(rt.settings, move)
