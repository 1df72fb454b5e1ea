"""Shadow sampling: after a routed answer is billed, some requests are also answered by the
other tier (on a ladder feature: the adjacent rung) on the async lane, under a budget of their
own, so a judge can compare the two."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from models.domain.charges import reach_worst_case, reachable
from models.domain.errors import BudgetExceeded
from models.domain.quality import PURPOSE_TAG, FeatureQuality, sampled, shadow_budget_key
from models.domain.request import ChatRequest
from models.domain.result import ChatResult
from models.domain.tokens import prompt_count
from queues.envelope import Envelope, task_id_for
from queues.names import task_for
from scheduler.route import decide_route
from scheduler.router.ladder_book import shared_book
from scheduler.router.rung_shadow import rung_shadow
from workers.runtime import WorkerRuntime

log = logging.getLogger("sluice.quality")
_OTHER = {"cheap": "flagship", "flagship": "cheap"}
_ENSURED: set[tuple[str, str]] = set()
_LOCK = threading.Lock()
_SIDE: Any = None
_SIDE_LOCK = threading.Lock()


def after_answer(rt: WorkerRuntime, env: Envelope, result: ChatResult) -> None:
    """The quality guard's step after a request is billed: shadow a served answer, judge a
    shadow's, count a judge's vote. Never fails the answer it follows."""
    if env.pair is None and env.request.lane == "interactive":
        # The caller waits for this task's return: its shadow is sent from a side thread.
        _side().submit(_guarded, rt, env, result)
        return
    _guarded(rt, env, result)


def _guarded(rt: WorkerRuntime, env: Envelope, result: ChatResult) -> None:
    try:
        if env.pair is None:
            maybe_shadow(rt, env, result)
            return
        from workers import judging

        if env.pair.get("role") == "shadow":
            judging.judge_pair(rt, env, result)
        elif env.pair.get("role") == "judge":
            judging.count_vote(rt, env, result)
    except Exception:  # noqa: BLE001 - measuring quality must never break a paid answer
        log.exception("quality guard step failed for %s (the answer stands)",
                      env.request.request_id)


def maybe_shadow(rt: WorkerRuntime, env: Envelope, result: ChatResult) -> bool:
    """Send ``env``'s request to the other tier when its feature samples it; True if sent."""
    req, tier = env.request, result.route.tier
    guard = rt.settings.quality.for_feature(req.feature)
    if guard is None or req.model != "auto" or result.tool_calls:
        return False
    book = shared_book(rt.settings.routing)
    ladder = book.for_feature(req.feature) if book is not None else None
    pair = {"role": "shadow", "of": req.request_id, "served_tier": tier,
            "served_model": result.model, "served_text": result.text,
            "served_cost": str(result.cost)}
    if ladder is not None:
        # A ladder feature is judged per rung: the adjacent rung answers, not the global tier.
        picked = rung_shadow(ladder, result.route, req, rt.catalogue,
                             env.prompt_tokens or prompt_count(req).tokens,
                             up_share=guard.shadow_cheap, down_share=guard.shadow_flagship)
        if picked is None:
            return False
        model = picked.model
        pair.update(task_type=result.route.task_type, served_rung=result.route.rung,
                    shadow_rung=picked.rung)
    else:
        share = guard.shadow_cheap if tier == "cheap" else guard.shadow_flagship
        if tier not in _OTHER or not sampled(req.request_id, share):
            return False
        model = rt.settings.routing.model_for(_OTHER[tier])
    if rt.admission is None:
        log.warning("feature %s samples shadows but no budgets are configured: shadows are "
                    "only sent under a budget of their own; none sent", req.feature)
        return False
    return send(rt, derived(req, "shadow", model=model, purpose="shadow"), pair, guard)


def derived(req: ChatRequest, suffix: str, *, model: str, purpose: str,
            update: dict[str, Any] | None = None) -> ChatRequest:
    """A request of the quality guard made from ``req``: its own id, the async lane, the named
    model, never cached, tagged with its purpose (so it matches only the shadow budget)."""
    rid = f"{req.request_id}:{suffix}"
    if len(rid) > 128:
        rid = f"{hashlib.sha256(req.request_id.encode()).hexdigest()[:40]}:{suffix}"
    return req.model_copy(update={
        "request_id": rid, "lane": "async", "model": model, "timeout_s": None,
        "cache": req.cache.model_copy(update={"mode": "bypass"}),
        "tags": {**req.tags, PURPOSE_TAG: purpose}, **(update or {})})


def send(rt: WorkerRuntime, req: ChatRequest, pair: dict[str, Any],
         guard: FeatureQuality) -> bool:
    """Reserve ``req``'s worst case on its feature's shadow budget and queue it; False (and
    nothing sent) when no shadow budget applies or it has no room."""
    assert rt.admission is not None
    ensure_budget(rt, req, guard)
    prompt = prompt_count(req)
    route = decide_route(req, rt.catalogue, rt.settings.routing, prompt_tokens=prompt.tokens)
    amount = reach_worst_case(prompt, req.max_tokens, reachable(
        rt.catalogue, rt.settings.providers.fallbacks, route.model))
    try:
        reservation = rt.admission.reserve(req, route, amount)
    except BudgetExceeded as exc:
        log.info("shadow %s not sent: %s", req.request_id, exc.message)
        return False
    if reservation is None:
        log.info("shadow %s not sent: feature %s has no shadow budget (`sluice budget set "
                 "--feature %s`)", req.request_id, req.feature, shadow_budget_key(req.feature))
        return False
    env = Envelope(request=req, route=route, prompt_tokens=prompt.tokens,
                   reservation_id=reservation, pair=pair)
    lane = rt.settings.lanes.get("async")
    try:
        _app().send_task(task_for(route.backend), args=[env.to_message()],
                         task_id=task_id_for(req), queue=route.queue, routing_key=route.queue,
                         priority=lane.priority, soft_time_limit=lane.soft_time_limit_s,
                         time_limit=lane.time_limit_s, kwargsrepr="{}",
                         argsrepr=f"({req.request_id!r}, feature={req.feature!r}, "
                                  f"model={route.model!r}, purpose=quality)")
    except Exception:
        rt.admission.release(reservation)
        raise
    return True


def ensure_budget(rt: WorkerRuntime, req: ChatRequest, guard: FeatureQuality) -> None:
    """Create the feature's daily shadow budget from its setting, once (an operator's own
    budget of that name is left as it is)."""
    if guard.shadow_budget_usd is None or (req.org, req.feature) in _ENSURED:
        return
    from models.db.budgets import get_budget, set_budget

    key = shadow_budget_key(req.feature)
    with _LOCK:
        with rt.session() as s:
            if get_budget(s, "feature", key, "daily", org=req.org) is None:
                set_budget(s, "feature", key, "daily", hard=guard.shadow_budget_usd,
                           org=req.org)
                s.commit()
        # Before any thread skips this step: the list in use may predate the budget (a reload
        # under way at the commit, or another process's worker created it within the cache's
        # second), and would refuse every shadow for lack of it ("no shadow budget").
        refresh = getattr(rt.admission, "refresh_budgets", None)
        if refresh is not None:
            refresh()
        _ENSURED.add((req.org, req.feature))


def _side() -> Any:
    global _SIDE
    with _SIDE_LOCK:
        if _SIDE is None:
            from concurrent.futures import ThreadPoolExecutor

            _SIDE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-shadow")
        return _SIDE


def _app() -> Any:
    # The worker's own Celery app: shadows go through the same broker and lanes.
    from celery import current_app

    return current_app



