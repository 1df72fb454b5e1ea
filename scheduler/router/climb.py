"""Pick a rung of a feature's ladder: task type first, then capabilities, price and the score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.cost import cost_of
from models.domain.errors import ValidationError
from models.domain.params import refusals
from models.domain.request import ChatRequest
from models.domain.tokens import count_request, count_text
from models.domain.usage import Usage
from scheduler.router.ladder import TASK_TAG, FeatureLadder, Rung, TaskType

#: Scores a request: (probability the first rung suffices, the router's label).
ScoreFn = Callable[[ChatRequest], tuple[float, str]]
#: Names a task type for a request: (name, probability), or None.
ClassifyFn = Callable[[ChatRequest], "tuple[str, float] | None"]


@dataclass(frozen=True)
class Option:
    """A rung that can serve the request, with its price for the request's expected tokens."""

    index: int
    rung: Rung
    model: ModelSpec
    expected_cost: Decimal


@dataclass(frozen=True)
class LadderDecision:
    """The rung chosen, why, and the stronger rungs a failing call may climb to."""

    model: ModelSpec
    #: The rung's index in the ladder climbed (the task type's own, else the feature's).
    rung: int
    task_type: str | None
    reason: str
    score: float | None = None
    escalation: tuple[str, ...] = ()


def expected_cost(model: ModelSpec, prompt_tokens: int, static_tokens: int,
                  output_tokens: int) -> Decimal:
    """The model's price for the expected tokens: the static prefix read from the provider's
    prompt cache (when it is long enough to be cached), the rest uncached, and the output."""
    cached = static_tokens if static_tokens >= model.min_cacheable_tokens else 0
    cached = min(cached, prompt_tokens)
    return cost_of(Usage(input_uncached=prompt_tokens - cached, cache_read=cached,
                         output=output_tokens), model)


def pick_task_type(ladder: FeatureLadder, request: ChatRequest, prompt_tokens: int,
                   classify: ClassifyFn | None = None) -> tuple[TaskType | None, str]:
    """The request's task type and why: the caller's hint, the first rule that matches, the
    classifier, or the feature's default (None: the feature's ladder serves it)."""
    if not ladder.task_types:
        return None, ""
    hint = request.tags.get(TASK_TAG)
    if hint:
        task = ladder.task(hint)
        if task is None:
            names = ", ".join(t.name for t in ladder.task_types)
            raise ValidationError(f"task type {hint!r} is not one of feature "
                                  f"{ladder.feature!r}'s: use one of {names} "
                                  "(x-sluice-task-type, or tags.task_type)", field="task_type")
        return task, "header"
    text, tools = request.last_user_text(), bool(request.static.tools)
    for task in ladder.task_types:
        why = task.when.matches(text, prompt_tokens, tools)
        if why is not None:
            return task, f"rule {why}"
    if classify is not None:
        guess = classify(request)
        if guess is not None and ladder.task(guess[0]) is not None:
            return ladder.task(guess[0]), f"classifier p={guess[1]:.2f}"
    if ladder.default_task_type is not None:
        return ladder.task(ladder.default_task_type), "default"
    return None, "no task type matched"


def options(rungs: tuple[Rung, ...], request: ChatRequest, catalogue: Catalogue,
            prompt_tokens: int, output_tokens: int) -> tuple[list[Option], list[str]]:
    """The rungs that can serve ``request`` (priced) and why each other one was skipped."""
    static = request.static
    static_tokens = (count_text("\n".join([static.system, *[m.content for m in
                                                             static.few_shot]]))
                     if not static.is_empty() else 0)
    out, skipped = [], []
    for i, rung in enumerate(rungs):
        model = catalogue.models.get(rung.model)
        if model is None or model.kind != "chat":
            skipped.append(f"{rung.model} not in the catalogue")
            continue
        lacking = [r.param for r in refusals(request, model)]
        tokens = count_request(request, model) if request.has_images else prompt_tokens
        if tokens + request.max_tokens > model.context:
            lacking.append("context")
        if lacking:
            skipped.append(f"{rung.model} lacks {'/'.join(dict.fromkeys(lacking))}")
            continue
        out.append(Option(i, rung, model, expected_cost(model, tokens, static_tokens,
                                                        output_tokens)))
    return out, skipped


def climbed(ladder: FeatureLadder, task: TaskType | None,
            request: ChatRequest) -> tuple[tuple[Rung, ...], int]:
    """The rungs a request of ``task`` climbs (their indices are the ledger's ``rung``) and
    the output tokens its rungs are priced for."""
    rungs = task.rungs if task is not None and task.rungs else ladder.rungs
    output = ((task.expected_output_tokens if task is not None else None)
              or ladder.expected_output_tokens or request.max_tokens)
    fixed = task.rung if task is not None else None
    if fixed and all(r.model != fixed for r in rungs):
        # A fixed rung outside the ladder sits at the top: climbing from it has nowhere to go.
        rungs = rungs + (Rung(fixed, 1.0),)
    return rungs, min(output, request.max_tokens)


def climb(ladder: FeatureLadder, request: ChatRequest, catalogue: Catalogue, *,
          prompt_tokens: int, policy: str = "auto", score: ScoreFn | None = None,
          classify: ClassifyFn | None = None) -> LadderDecision | None:
    """The rung for ``request`` under ``policy`` (``auto`` or a tier name); None when no rung
    of the ladder can serve it (the caller falls back to the catalogue)."""
    task, why_task = pick_task_type(ladder, request, prompt_tokens, classify)
    rungs, output = climbed(ladder, task, request)
    target = task.target if task is not None and task.target is not None else ladder.target
    fixed = task.rung if task is not None else None
    opts, skipped = options(rungs, request, catalogue, prompt_tokens, output)
    head = f"task {task.name} ({why_task}); " if task is not None else ""
    skip = f"; skipped {', '.join(skipped)}" if skipped else ""
    if not opts:
        return None
    s: float | None = None
    if policy != "auto":
        picked = _tier(policy, ladder, opts)
        if picked is None:
            return None  # no self-hosted rung: the deployment's self-hosted tier
        chosen, why = picked
    elif fixed:
        chosen, why = _at_least(opts, next(r for r in rungs if r.model == fixed)), "fixed rung"
        if chosen.rung.model != fixed:
            why = f"fixed rung {fixed} cannot serve, climbed"
    else:
        chosen, s, why = _auto(opts, target, request, score)
    above = [o for o in opts if o.rung.quality > chosen.rung.quality]
    escalation = tuple(o.model.name for o in sorted(above, key=lambda o: o.rung.quality)) \
        if ladder.escalate else ()
    reason = (f"ladder {ladder.feature}: {head}{why} -> rung {chosen.index} "
              f"{chosen.model.name} (${chosen.expected_cost:.6f} expected){skip}")
    return LadderDecision(model=chosen.model, rung=chosen.index,
                          task_type=task.name if task is not None else None, reason=reason,
                          score=s, escalation=escalation)


def _auto(opts: list[Option], target: float, request: ChatRequest,
          score: ScoreFn | None) -> tuple[Option, float | None, str]:
    """The cheapest option whose predicted quality meets ``target``."""
    if target >= 1.0:
        # Full quality asked (an operator's, or the quality floor's move at its top): the
        # strongest rung whatever the score, as the floor's all-flagship threshold does.
        top = max(opts, key=lambda o: (o.rung.quality, -o.expected_cost))
        return top, None, f"target {target:.3f}: the strongest"
    if len({o.rung.quality for o in opts}) == 1 or score is None:
        best = min(opts, key=lambda o: (o.expected_cost, -o.rung.quality))
        return best, None, "cheapest capable rung" if score else "no router: cheapest rung"
    s, label = score(request)
    s = min(max(float(s), 0.0), 1.0)
    good = [o for o in opts if s + (1 - s) * o.rung.quality >= target - 1e-12]
    if not good:
        top = max(opts, key=lambda o: (o.rung.quality, -o.expected_cost))
        return top, s, f"{label}: score {s:.3f}, no rung meets {target:.3f}: the strongest"
    best = min(good, key=lambda o: (o.expected_cost, -o.rung.quality))
    predicted = s + (1 - s) * best.rung.quality
    return best, s, f"{label}: score {s:.3f}, predicted {predicted:.3f} >= {target:.3f}"


def _at_least(opts: list[Option], rung: Rung) -> Option:
    """The option at ``rung``, else the cheapest at least as strong, else the strongest."""
    exact = [o for o in opts if o.rung.model == rung.model]
    if exact:
        return exact[0]
    stronger = [o for o in opts if o.rung.quality >= rung.quality]
    if stronger:
        return min(stronger, key=lambda o: (o.expected_cost, -o.rung.quality))
    return max(opts, key=lambda o: o.rung.quality)


def _tier(tier: str, ladder: FeatureLadder, opts: list[Option]) -> tuple[Option, str] | None:
    """A named tier on the ladder: its mapped rung, else cheap = the cheapest option,
    flagship = the strongest, self-hosted = the first self-hosted one."""
    mapped = ladder.tiers.get(tier)
    if mapped is not None:
        quality = next((o.rung.quality for o in opts if o.rung.model == mapped), None)
        if quality is None:  # mapped rung cannot serve: the next stronger one
            quality = next((r.quality for r in ladder.rungs if r.model == mapped), 1.0)
        return _at_least(opts, Rung(mapped, quality)), f"tier {tier} -> {mapped}"
    if tier == "cheap":
        return min(opts, key=lambda o: (o.expected_cost, -o.rung.quality)), "tier cheap"
    if tier == "self-hosted":
        local = [o for o in opts if o.model.backend == "gpu"]
        return (local[0], "tier self-hosted") if local else None
    return max(opts, key=lambda o: (o.rung.quality, -o.expected_cost)), f"tier {tier}"
