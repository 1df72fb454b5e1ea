"""A model's deployments in the order one request tries them, and what a failure does to them."""

from __future__ import annotations

from dataclasses import replace

from models.domain.catalogue import ModelSpec
from models.domain.deployments import deployment_name, rank
from models.domain.errors import ProviderError, ProviderPermanent, ProviderRetryable
from models.domain.request import ChatRequest
from workers.deployment_health import cools
from workers.providers.retry import RetryPolicy
from workers.providers.shaping import static_fingerprint
from workers.runtime import WorkerRuntime

#: Permanent refusals that are the deployment's (its key, its model id), not the request's:
#: the next deployment of the same model may well answer.
_DEPLOYMENT_REFUSALS = frozenset({401, 403, 404})


def prefix_key(request: ChatRequest) -> str:
    """What stickiness hashes: the static prefix (tools, system, few-shot), so requests that
    share it meet the same provider cache; a request with none spreads by its id."""
    if request.static.is_empty():
        return request.request_id
    return static_fingerprint(request.static)


def deployments_for(rt: WorkerRuntime, request: ChatRequest, model: ModelSpec
                    ) -> list[ModelSpec]:
    """``model``'s deployments for ``request``: healthy ones by weighted rendezvous on its
    prefix, cooling ones after them, those past their own daily budget left out."""
    variants = model.variants
    if len(variants) == 1 and variants[0].deployment is None:
        return list(variants)  # reached through its provider's settings: nothing to choose
    health = rt.health()
    return rank(variants, prefix_key(request),
                cooling=health.cooling(deployment_name(v) for v in variants),
                spent_out=health.spent_out(variants))


def policy_for(rt: WorkerRuntime, index: int, count: int) -> RetryPolicy:
    """A deployment with another one after it gets one attempt (a failure moves on to the
    next, which is what several deployments are for); the last one gets the full policy."""
    return rt.retry if index == count - 1 else replace(rt.retry, max_attempts=1)


def moves_on(err: ProviderError) -> bool:
    """Does ``err`` send the request to the model's next deployment? Retryable errors do; of
    the permanent ones only a deployment's own refusal (bad key, unknown model id there)."""
    if isinstance(err, ProviderRetryable):
        return True
    return isinstance(err, ProviderPermanent) and err.status in _DEPLOYMENT_REFUSALS \
        and not err.details.get("billed")


def failed(rt: WorkerRuntime, spec: ModelSpec, err: ProviderError, count: int) -> None:
    """Cool ``spec``'s deployment down when the error is the deployment's and the model has
    others to send to meanwhile."""
    if count > 1 and spec.deployment is not None and cools(err):
        rt.health().cool(deployment_name(spec), err)
