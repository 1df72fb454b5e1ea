"""Cache identity on real Redis: a routing change never serves another tier's answer, and a
fallback's answer is kept under the fallback model (issue 16, must-have 8)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import load_settings
from queues.envelope import Envelope
from queues.response_cache import RedisResponseCache
from workers.runtime import build_runtime
from workers.service import execute

pytestmark = pytest.mark.integration
FEATURE = "faq-identity"


def _cache(env: dict[str, str], **routing: Any) -> RedisResponseCache:
    settings = load_settings(env)
    return RedisResponseCache(settings.model_copy(update={
        "routing": settings.routing.model_copy(update=routing)}))


def _request(model: str, text: str) -> Any:
    return parse_request({"request_id": f"ci-{uuid.uuid4().hex}", "team": "support",
                          "feature": FEATURE, "model": model, "max_tokens": 16,
                          "messages": [{"role": "user", "content": text}]})


def test_a_changed_feature_policy_or_default_router_misses(integration_env: dict[str, str],
                                                           ) -> None:
    from models.domain.result import ChatResult

    text = f"Which plan fits a team of five? {uuid.uuid4().hex[:8]}"
    request = _request("auto", text)
    cheap = ChatResult(request_id=request.request_id, text="the cheap tier's answer",
                       provider="openai", model="gpt-4o-mini",
                       route=Route(tier="cheap", model="gpt-4o-mini", provider="openai",
                                   backend="api", lane="interactive", reason="heuristic"))
    before = _cache(integration_env)
    before.store(request, cheap)
    assert before.lookup(_request("auto", text)) is not None  # the same config hits
    forced = _cache(integration_env, policies=[{"feature": FEATURE, "forced_tier": "flagship"}])
    assert forced.lookup(_request("auto", text)) is None
    assert _cache(integration_env, default_router="random").lookup(_request("auto", text)) is None
    for cache in (before, forced):
        cache.close()


@pytest.fixture()
def worker_rt(integration_env: dict[str, str]) -> Iterator[Any]:
    env = {**integration_env,
           "SLUICE_PROVIDERS__FALLBACKS": '{"gpt-4o-mini": ["claude-haiku-4-5"]}'}
    cache = RedisResponseCache(load_settings(env))
    runtime = build_runtime(load_settings(env), admission=None, cache=cache)
    yield runtime
    runtime.close()
    cache.close()


def test_a_fallback_answer_is_stored_under_the_fallback_model(worker_rt: Any,
                                                              standin: Any) -> None:
    text = f"Reset steps for the router? {uuid.uuid4().hex[:8]}"
    request = _request("cheap", text)
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive", reason="policy: cheap")
    standin.script_faults(["500", "500", "500"], path="openai", model="gpt-4o-mini")
    reply = execute(Envelope(request=request, route=route).to_message(), worker_rt)
    assert reply["ok"] and reply["result"]["model"] == "claude-haiku-4-5", reply
    cache = worker_rt.cache
    # A later "cheap" request is for gpt-4o-mini: the haiku answer must not be served to it.
    assert cache.lookup(_request("cheap", text)) is None
    hit = cache.lookup(_request("claude-haiku-4-5", text))
    assert hit is not None and hit.model == "claude-haiku-4-5" and hit.cache_hit
