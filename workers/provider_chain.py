"""Call the routed model's deployments, then its fallbacks and stronger rungs: every attempt
admitted inside the reservation and recorded, a stream billed for what it received."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from models.domain.allow_list import may_use
from models.domain.catalogue import ModelSpec
from models.domain.charges import reachable
from models.domain.errors import ProviderError, ProviderPermanent, ProviderRetryable
from queues.envelope import Envelope, task_id_for
from queues.token_stream import TEXT, TokenWriter, token_key
from workers.attempts import OutOfTime, RunMoney
from workers.batch.seam import batch_reply, pending_attempt, wants_batch
from workers.context_cache import explicit_cache_for, note_reply
from workers.failover import deployments_for, failed, moves_on, policy_for
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.retry import with_retries
from workers.runtime import WorkerRuntime


def model_chain(rt: WorkerRuntime, env: Envelope) -> list[ModelSpec]:
    """The routed model, then its configured fallbacks, then the stronger rungs of its
    ladder (a rung that keeps failing climbs): those its key may use."""
    chain = reachable(rt.catalogue, rt.settings.providers.fallbacks, env.route.model,
                      env.route.escalation)
    return chain[:1] + [m for m in chain[1:]
                        if may_use(env.request, m.name, rt.settings.routing)]


def call_chain(rt: WorkerRuntime, money: RunMoney, *, polling: bool = False
          ) -> tuple[ProviderReply, ModelSpec]:
    """One provider call under our retry policy, then each configured fallback in turn; each
    attempt admitted and recorded by ``money``; ``polling``: a visit to a pending batch."""
    env = money.env
    chain = model_chain(rt, env)
    primary = chain[0]
    scope = f"{env.request.org}/{env.request.team}/{env.request.feature}"
    ttl = rt.settings.providers.ttl_for(env.request.feature)
    # Seam: an async request opted into provider Batch APIs waits here for its batch to answer
    # (this process's collector gathers it with others); it is one attempt, at the batch price.
    if primary.deployment is None and wants_batch(env.request, primary.provider, rt.settings):
        # A visit to a pending batch goes on with the attempt an earlier visit left pending.
        batched = money.attempt(primary, lambda _left: batch_reply(rt, ProviderCall(
            request=env.request, model=primary, cache_scope=scope, cache_ttl=ttl)), batch=True,
            pending=pending_attempt(rt, env.request, money.run, polling=polling))
        if batched is not None:
            return batched, primary
    last: ProviderError | None = None
    tokens = _writer(rt, env)
    seen: list[str] = []  # text the current attempt received: a broken stream bills it

    def attempt_on(provider: Any, model: ModelSpec,
                   cached: str = "") -> Callable[[float], ProviderReply]:
        def send(left: float) -> ProviderReply:
            seen.clear()
            call = ProviderCall(request=env.request, model=model, cache_scope=scope,
                                cache_ttl=ttl, cached_content=cached,
                                timeout_s=min(left, rt.settings.providers.timeout_s))
            return one_attempt(provider, call, tokens, money.deadline, seen)
        return send

    try:
        for model in chain:
            # Its deployments first (weighted, sticky per prefix, healthy first), then the
            # next model: every attempt is admitted inside the reservation by ``money``.
            specs = deployments_for(rt, env.request, model)
            for i, spec in enumerate(specs):
                # Gemini: an explicit context cache for the static part, when its reuse pays.
                cached = explicit_cache_for(rt, env, spec)
                send = attempt_on(rt.provider_for(spec), spec, cached)
                before = money.spent
                try:
                    reply = with_retries(
                        lambda m=spec, f=send: money.attempt(m, f, stream=tokens is not None,
                                                             received=lambda: "".join(seen)),
                        policy_for(rt, i, len(specs)))
                    note_reply(rt, env, spec, reply, cached)
                    return reply, spec
                except ProviderError as err:
                    rt.health().add_spend(spec, money.spent - before)
                    failed(rt, spec, err, len(specs))
                    if isinstance(err, ProviderPermanent) and (i == len(specs) - 1
                                                               or not moves_on(err)):
                        raise
                    last = err  # exhausted: the next deployment, then the next model
    finally:
        if tokens is not None:
            tokens.close()  # the end mark: the door stops reading and takes the result
    if last is None:
        names = ", ".join(m.name for m in chain)
        raise ProviderRetryable(
            f"every deployment of {names} is past its own daily budget (daily_budget_usd in "
            "the price file); nothing was sent; raise a budget or add a deployment, or retry "
            "after midnight UTC", provider=chain[0].provider, tried=names)
    # Say what was tried: the caller sees the whole chain, not only the last model's status.
    tried = ", ".join(m.name for m in chain)
    charged = (f"; {money.spent} USD of it charged as the provider may have billed it "
               "(estimated)" if money.spent else "; nothing was billed")
    raise ProviderRetryable(
        f"{last.message}; gave up after {rt.retry.max_attempts} attempts on each of {tried} "
        f"(SLUICE_PROVIDERS__MAX_ATTEMPTS / __FALLBACKS){charged}; retry later",
        provider=last.provider, status=last.status,
        retry_after=getattr(last, "retry_after", None), tried=tried)


def _writer(rt: WorkerRuntime, env: Envelope) -> TokenWriter | None:
    """Where a streamed request's text goes as it is generated (None: answered whole)."""
    if not env.stream or rt.tokens is None:
        return None
    return TokenWriter(rt.tokens, token_key(rt.settings.broker.key_prefix,
                                            task_id_for(env.request)))


def one_attempt(provider: Any, call: ProviderCall, tokens: TokenWriter | None,
             deadline: float = float("inf"), seen: list[str] | None = None) -> ProviderReply:
    """One call: streamed when the caller streams and the adapter can, else whole. A stream
    past the run's time limit is abandoned (``seen`` keeps what it received: it is billed)."""
    stream = getattr(provider, "stream", None)
    if tokens is None or stream is None:
        return provider.complete(call)

    received = seen if seen is not None else []

    def part(kind: str, piece: str) -> None:
        if kind != "signature":  # thinking is output too, billed if the stream is abandoned
            received.append(piece)
        if time.time() > deadline:
            raise OutOfTime(f"{call.model.provider}: the answer was still streaming when the "
                            "run's time limit passed; abandoned", provider=call.model.provider,
                            billed="unknown")
        tokens.part(kind, piece)

    def sink(piece: str) -> None:
        part(TEXT, piece)

    sink.part = part  # type: ignore[attr-defined]  # thinking and its signature (send_part)

    try:
        reply: ProviderReply = stream(call, sink)
    except ProviderRetryable as err:
        if tokens.sent and not isinstance(err, OutOfTime):  # out of time: no retry follows
            # The caller already read part of an answer: another attempt would write a
            # second one after it. End here; what was received is charged (workers.attempts).
            raise ProviderPermanent(f"{err.message}; the answer broke off after it had begun "
                                    "streaming, so it was not retried: retry the request",
                                    provider=err.provider, status=err.status,
                                    billed=err.details.get("billed", "unknown")) from err
        raise
    finally:
        tokens.flush()  # never raises: a broken writer leaves the text to the result
    return reply
