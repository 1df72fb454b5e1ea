"""Where the service hands an opted-in async request to this process's batch collector."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout

from models.domain.errors import ConfigError, ProviderRetryable
from models.domain.request import ChatRequest
from models.domain.settings import Settings
from queues.envelope import task_id_for
from workers.batch.base import BATCH_PROVIDERS, BatchAPI
from workers.batch.collector import BatchCollector
from workers.batch.placements import placements_for
from workers.providers.base import ProviderCall, ProviderReply
from workers.runtime import WorkerRuntime, provider_key

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
#: The request tag that opts one request in (``"true"``) or out (``"false"``).
BATCH_TAG = "batch"


def wants_batch(request: ChatRequest, provider: str, settings: Settings) -> bool:
    """Whether ``request`` goes through a provider Batch API: async lane, hosted, opted in."""
    if request.lane != "async" or provider not in BATCH_PROVIDERS:
        return False
    tag = request.tags.get(BATCH_TAG, "").strip().lower()
    if tag in ("false", "0", "no"):
        return False
    return (tag in ("true", "1", "yes") or settings.batch.enabled
            or request.feature in settings.batch.features)


def max_wait_s(settings: Settings) -> float:
    """How long a task waits for its batch (the async lane's soft limit, less a margin)."""
    if settings.batch.max_wait_s > 0:
        return settings.batch.max_wait_s
    return max(settings.lanes.get("async").soft_time_limit_s - 10.0, 1.0)


def batch_reply(rt: WorkerRuntime, call: ProviderCall) -> ProviderReply | None:
    """The batched answer to ``call``, or None when it is not batched (call directly then).

    A batch that fails retryably (expired, cancelled, submission refused) also gives None:
    the request is then answered directly at the full price rather than not at all. A batch
    still running after :func:`max_wait_s` raises ProviderRetryable instead: answering it
    directly too would pay twice.
    """
    if not wants_batch(call.request, call.model.provider, rt.settings):
        return None
    future = collector_for(rt).submit(call, key=task_id_for(call.request))
    wait = max_wait_s(rt.settings)
    try:
        return future.result(timeout=wait)
    except FutureTimeout:
        raise ProviderRetryable(
            f"request {call.request.request_id} is still in a {call.model.provider} batch after "
            f"{wait:.0f} s; raise SLUICE_BATCH__MAX_WAIT_S (and the async lane's time limits) "
            "for providers that take longer", provider=call.model.provider) from None
    except ProviderRetryable as err:
        log.warning("batch failed for %s, answering directly: %s", call.request.request_id, err)
        return None


def collector_for(rt: WorkerRuntime) -> BatchCollector:
    """This process's collector, built on first use and kept on the runtime."""
    found: BatchCollector | None = getattr(rt, "_batch_collector", None)
    if found is None:
        with _LOCK:
            found = getattr(rt, "_batch_collector", None)
            if found is None:
                lane = rt.settings.lanes.get("async")
                found = BatchCollector(lambda name: build_batch_api(name, rt.settings),
                                       max_size=lane.batch_max,
                                       max_wait_s=lane.batch_timeout_ms / 1000.0,
                                       poll_interval_s=rt.settings.batch.poll_interval_s,
                                       retry=rt.retry,
                                       placements=placements_for(
                                           rt.settings.broker.state_url() or "memory://",
                                           rt.settings.broker.key_prefix))
                # One per worker process, like the runtime it hangs on.
                rt._batch_collector = found  # type: ignore[attr-defined]
    return found


def build_batch_api(name: str, settings: Settings) -> BatchAPI:
    """The Batch API adapter of provider ``name``, keyed like the single-call adapters."""
    p = settings.providers
    if name == "openai":
        from workers.batch.openai_batch import OpenAIBatchAPI

        return OpenAIBatchAPI(api_key=provider_key(p.openai_api_key, p.openai_base_url, "OPENAI"),
                              base_url=p.openai_base_url, timeout=p.timeout_s)
    if name == "anthropic":
        from workers.batch.anthropic_batch import AnthropicBatchAPI

        return AnthropicBatchAPI(
            api_key=provider_key(p.anthropic_api_key, p.anthropic_base_url, "ANTHROPIC"),
            base_url=p.anthropic_base_url, timeout=p.timeout_s)
    raise ConfigError(f"provider {name!r} has no Batch API; batching serves "
                      f"{', '.join(BATCH_PROVIDERS)}")
