"""The producer's embedding path: validate, resolve the model, read the item cache, reserve,
queue only the missing items, and answer every item in the caller's order."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from models.db.embedding_rows import cached_part_id, embedding_row
from models.domain.allow_list import clamp_embedding
from models.domain.catalogue import Catalogue, ModelSpec
from models.domain.tokens import PromptCount
from models.domain.cost import list_cost, worst_case_cost
from models.domain.embedding import (AUTO, EmbeddingRequest, EmbeddingResult, Item,
                                     parse_embedding_request)
from models.domain.errors import (BrokerError, QueuePaused, SluiceError, UnknownModelError,
                                  ValidationError, from_dict)
from models.domain.result import Route
from models.domain.settings import EmbeddingSettings, RoutingSettings
from models.domain.tokens import count_text_as
from models.domain.usage import Usage
from queues.embedding_cache import ItemCache, item_cache_for
from queues.embedding_envelope import TASK_EMBED, EmbeddingEnvelope
from queues.envelope import task_id_for
from queues.handle import Handle, TaskHandle
from queues.inflight import InflightMessage
from queues.rate_step import RateStep

_NO_CACHE = object()
#: Providers whose embedding models take text only (token ids are another tokenizer's).
_TEXT_ONLY = ("local", "google")


def resolve_model(request: EmbeddingRequest, catalogue: Catalogue, config: EmbeddingSettings,
                  routing: RoutingSettings | None = None) -> tuple[ModelSpec, str]:
    """The embedding model ``request`` names (``auto``: its feature's configured one, clamped
    into the key's allow-list) and why; a chat model is a ValidationError on ``model``, a
    named model outside the key's allow-list NotAllowed (403)."""
    name = config.model_for(request.feature) if request.model == AUTO else request.model
    reason = (f"auto: the embedding model of feature {request.feature}"
              if request.model == AUTO else f"named model {name}")
    model = catalogue.get(name)
    if model.kind != "embedding" or model.embedding is None:
        known = ", ".join(m for m, s in catalogue.models.items() if s.kind == "embedding")
        raise UnknownModelError(f"{name} is not an embedding model; use auto or one of: {known}",
                                field="model", model=name)
    if request.allowed_models is not None:
        model, why = clamp_embedding(request, model, catalogue, routing or RoutingSettings())
        reason += why
    return model, reason


def check_request(request: EmbeddingRequest, model: ModelSpec) -> tuple[int, list[int]]:
    """The vector size the answer has and each item's token count by the model's tokenizer
    (an upper bound for a word-piece model); refuses what the model cannot take, naming the
    field."""
    limits = model.embedding
    assert limits is not None
    dims = request.dimensions
    if dims is not None and dims != limits.dimensions:
        if not limits.shortenable:
            raise ValidationError(f"{model.name} answers {limits.dimensions}-dimensional vectors "
                                  "only: drop dimensions, or use text-embedding-3-small/large",
                                  field="dimensions")
        if dims > limits.dimensions:
            raise ValidationError(f"dimensions {dims} is more than {model.name}'s "
                                  f"{limits.dimensions}", field="dimensions")
    tokens: list[int] = []
    for i, item in enumerate(request.inputs):
        if isinstance(item, str):
            # Counted as the provider bills it (the model's tokenizer: cl100k for OpenAI's
            # embedding models); a word-piece model's bytes bound is capped at its limit (it
            # truncates past it).
            n = count_text_as(item, limits.tokenizer)
            if limits.tokenizer == "bytes":
                n = min(n, limits.max_item_tokens)
        elif model.provider in _TEXT_ONLY:
            raise ValidationError(f"input[{i}] is a token array: {model.name} takes text only "
                                  "(token ids are another model's tokenizer)", field=f"input[{i}]")
        else:
            n = len(item)
        if n > limits.max_item_tokens:
            raise ValidationError(f"input[{i}] has {n} tokens; {model.name} takes at most "
                                  f"{limits.max_item_tokens} per input", field=f"input[{i}]")
        tokens.append(n)
    return dims or limits.dimensions, tokens


class EmbeddingHandle(Handle):
    """A submitted embedding request: cached vectors now, the rest when the worker answers."""

    def __init__(self, request: EmbeddingRequest, route: Route, *, vectors: list[str | None],
                 sent: list[int], tokens: list[int], task: TaskHandle | None,
                 price_version: str, cached_baseline: Decimal, started: float) -> None:
        self.request_id = request.request_id
        self.request, self.route = request, route
        #: Per position: the cached vector, or None until the worker's answer fills it.
        self._vectors = vectors
        #: Per position: the index of its item among those sent, or -1 when cached.
        self._sent = sent
        self._tokens = tokens
        self._task = task
        self.task_id = task.task_id if task is not None else None
        self._version = price_version
        self._cached_baseline = cached_baseline
        self._started = started
        self._result: EmbeddingResult | SluiceError | None = None

    def result(self, timeout: float | None = None) -> EmbeddingResult:  # type: ignore[override]
        """Every item's vector in the caller's order, with what the request cost."""
        if self._result is None:
            self._result = self._merge(timeout)
        if isinstance(self._result, SluiceError):
            raise self._result
        return self._result

    def _merge(self, timeout: float | None) -> EmbeddingResult | SluiceError:
        n = len(self._vectors)
        base: dict[str, Any] = {
            "request_id": self.request_id, "model": self.route.model,
            "provider": self.route.provider, "route": self.route, "items": n,
            "cached_items": sum(1 for i in self._sent if i < 0),
            "total_tokens": sum(self._tokens), "price_version": self._version}
        if self._task is None:
            return EmbeddingResult(vectors=tuple(v or "" for v in self._vectors),
                                   baseline_cost=self._cached_baseline, **base)
        reply = self._task._wait(timeout)
        if not isinstance(reply, dict) or "ok" not in reply:
            return SluiceError(f"unexpected task reply {reply!r}; are producer and worker "
                               "versions the same?")
        if not reply["ok"]:
            return from_dict(reply["error"])
        fresh = EmbeddingResult.model_validate(reply["result"])
        vectors = [v if v is not None else fresh.vectors[self._sent[i]]
                   for i, v in enumerate(self._vectors)]
        return fresh.model_copy(update={
            **base, "vectors": tuple(vectors),
            "baseline_cost": fresh.baseline_cost + self._cached_baseline,
            "timings": fresh.timings.model_copy(
                update={"total_ms": (time.time() - self._started) * 1000})})

    def done(self) -> bool:
        return self._task is None or self._task.done()

    def forget(self) -> None:
        if self._task is not None:
            self._task.forget()


def item_cache(gateway: Any) -> ItemCache | None:
    """The gateway's item cache, built on first use."""
    found = getattr(gateway, "_sluice_item_cache", _NO_CACHE)
    if found is _NO_CACHE:
        found = item_cache_for(gateway.settings)
        gateway._sluice_item_cache = found
    return found  # type: ignore[return-value]


def submit_embedding(gateway: Any, data: EmbeddingRequest | dict[str, Any], *,
                     admit: Callable[[EmbeddingRequest], None] | None = None) -> EmbeddingHandle:
    """Validate and dispatch an embedding request; returns at once with its handle.

    Raises ValidationError (naming the field), BudgetExceeded, QueuePaused, Overloaded or
    BrokerError before anything is enqueued.
    """
    started = time.time()
    request = parse_embedding_request(data)
    model, reason = resolve_model(request, gateway.catalogue, gateway.settings.embeddings,
                                  gateway.settings.routing)
    dims, tokens = check_request(request, model)
    route = Route(tier="embedding", model=model.name, provider=model.provider, backend="api",
                  lane=request.lane, reason=reason)
    cache = item_cache(gateway)
    n = len(request.inputs)
    vectors: list[str | None] = [None] * n
    keys: list[str] = []
    if cache is not None and request.cache.mode != "bypass":
        keys = cache.keys(request, model.name, dims, request.inputs)
        if request.cache.mode == "use":
            vectors = cache.get_many(keys)
    # Each missing input is sent once, however often the request repeats it.
    sent = [-1] * n
    first: dict[Item, int] = {}
    missing: list[int] = []
    for i, item in enumerate(request.inputs):
        if vectors[i] is not None:
            continue
        if item not in first:
            first[item] = len(missing)
            missing.append(i)
        sent[i] = first[item]
    cached_tokens = sum(t for i, t in enumerate(tokens) if sent[i] < 0)
    cached_baseline = list_cost(Usage(input_uncached=cached_tokens), model)
    task = None
    if missing:
        if admit is not None:
            admit(request)
        task = _dispatch(gateway, request, route, model, dims, missing, tokens)
    if any(s < 0 for s in sent) and gateway.cache_hit_sink is not None:
        _record_hits(gateway, request, route, model, sent, cached_tokens, cached_baseline,
                     whole=task is None)
    return EmbeddingHandle(request, route, vectors=vectors, sent=sent, tokens=tokens, task=task,
                           price_version=gateway.catalogue.version,
                           cached_baseline=cached_baseline, started=started)


def _record_hits(gateway: Any, request: EmbeddingRequest, route: Route, model: ModelSpec,
                 sent: list[int], tokens: int, baseline: Decimal, *, whole: bool) -> None:
    """The cached items' row: $0, the list price they would have cost saved (off the hot
    path, as response-cache hits are)."""
    put = getattr(gateway.cache_hit_sink, "put_row", None)
    if put is None:
        return
    put(embedding_row(request, route, outcome="cache_hit",
                      items=sum(1 for s in sent if s < 0), tokens=tokens,
                      baseline_cost=baseline, price_version=gateway.catalogue.version,
                      request_id=None if whole else cached_part_id(request.request_id)))


def _dispatch(gateway: Any, request: EmbeddingRequest, route: Route, model: ModelSpec,
              dims: int, missing: list[int], tokens: list[int]) -> TaskHandle:
    if gateway.pauses is not None:
        why = gateway.pauses.paused(route.queue)
        if why:
            raise QueuePaused(f"queue {route.queue} is paused ({why}); retry later or ask an "
                              "operator to run `sluice queues resume`", queue=route.queue)
    item_tokens = tuple(tokens[i] for i in missing)
    prompt_tokens = sum(item_tokens)

    def send(step: RateStep) -> TaskHandle:
        reservation, reused = None, False
        if gateway.admission is not None:
            # Input tokens at the model's price: an embedding generates nothing, and is never
            # sent to another model (a vector of one model must not stand in for another's).
            amount = worst_case_cost(PromptCount(tokens=prompt_tokens), 0, model)
            # As chat does: a retry while its first run is open gets that run's reservation,
            # which this one must never release.
            reservation, reused = gateway._reserve(request, route, amount, step)
        try:
            step.ensure()  # an admission that did not run it: a refusal releases the money
            grant, waits = step.grant, step.waits
            now = time.time()
            sub = request.model_copy(update={"inputs": tuple(request.inputs[i]
                                                             for i in missing)})
            env = EmbeddingEnvelope(request=sub, route=route, item_tokens=item_tokens,
                                    prompt_tokens=prompt_tokens, reservation_id=reservation,
                                    enqueued_at=now, deadline=gateway._deadline(request, now),
                                    dimensions=dims,
                                    rate_grant=grant.to_json() if grant else None,
                                    rate_wait=waits is not None)
            if "request_id" in request.model_fields_set:  # a caller's id: maybe a retry
                gateway.forget_error(task_id_for(sub))  # type: ignore[arg-type]
            return TaskHandle(_send(gateway, env, countdown=waits),
                              request_id=request.request_id, model=model.name)
        except Exception:
            if reservation is not None and not reused:
                gateway.admission.release(reservation)
            raise

    try:
        # The chat path's governance: rate limits (tokens: the inputs sent) inside the budget's.
        return gateway.governed(request, route, prompt_tokens, send)  # type: ignore[no-any-return]
    except ValidationError as err:
        if err.field != "max_tokens":
            raise
        raise ValidationError(f"the inputs sent have {prompt_tokens} tokens, more than rate "
                              f"limit {err.details.get('limit')} allows in a whole window: "
                              "send fewer inputs per request", field="input",
                              limit=err.details.get("limit")) from None


def _send(gateway: Any, env: EmbeddingEnvelope, *, countdown: float | None = None) -> Any:
    lane = gateway.settings.lanes.get(env.route.lane)
    req = env.request
    options = {"priority": lane.priority, "soft_time_limit": lane.soft_time_limit_s,
               "time_limit": lane.time_limit_s,
               "argsrepr": f"({req.request_id!r}, team={req.team!r}, feature={req.feature!r}, "
                           f"model={env.route.model!r}, items={len(req.inputs)})",
               "kwargsrepr": "{}"}
    if countdown:  # over a rate limit on the async lane: it waits in its queue
        options["countdown"] = countdown
    task_id = task_id_for(req)  # type: ignore[arg-type]
    args = [env.to_message()]
    try:
        if gateway.inflight is not None:
            gateway.inflight.add(InflightMessage(
                task_id=task_id, request_id=req.request_id, task=TASK_EMBED,
                queue=env.route.queue, args=args, options=options))
        return gateway.app.send_task(TASK_EMBED, args=args, task_id=task_id,
                                     queue=env.route.queue, routing_key=env.route.queue,
                                     **options)
    except (OperationalError, RedisError) as exc:
        raise BrokerError(f"the broker refused the embedding request: {exc}; check that it "
                          "runs (SLUICE_BROKER__URL) and retry") from exc


def embed(gateway: Any, data: EmbeddingRequest | dict[str, Any],
          timeout: float | None = 60.0) -> EmbeddingResult:
    """Submit an embedding request and wait up to ``timeout`` seconds for every vector."""
    request = parse_embedding_request(data)
    if request.timeout_s is None and timeout is not None and 0 < timeout <= 86_400:
        request = request.model_copy(update={"timeout_s": timeout})
    return submit_embedding(gateway, request).result(timeout=timeout)
