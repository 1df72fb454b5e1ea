"""Deployment cooldowns and budgets in a real Redis: shared, expiring, recovering."""

from __future__ import annotations

import tomllib
import uuid
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from models.domain.catalogue import parse_catalogue
from models.domain.deployments import deployment_name, rank
from models.domain.errors import ProviderPermanent, ProviderRetryable
from workers.deployment_health import DeploymentHealth, cools

pytestmark = pytest.mark.integration

SHIPPED = tomllib.loads(resources.files("models.data").joinpath("prices.toml").read_text())
CAT = parse_catalogue({**SHIPPED, **tomllib.loads('''
[deployments.h-a]
model = "gpt-4o"
[deployments.h-b]
model = "gpt-4o"
daily_budget_usd = "0.01"
''')}, "<test>")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def redis_client(redis_db_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_db_url)
    yield client
    client.close()


def health(client: Any, clock: Clock, prefix: str) -> DeploymentHealth:
    return DeploymentHealth(client, prefix=prefix, cooldown_s=30.0, clock=clock)


def test_a_cooldown_is_seen_by_every_worker_and_lapses(redis_client: Any) -> None:
    clock, prefix = Clock(), f"t{uuid.uuid4().hex[:8]}:"
    one, other = health(redis_client, clock, prefix), health(redis_client, clock, prefix)
    err = ProviderRetryable("503", provider="openai", status=503)
    one.cool("h-a", err)
    assert other.cooling(["h-a", "h-b"]) == {"h-a"}  # another process's view: shared
    variants = CAT.get("gpt-4o").variants
    # Skipped while cooling: every prefix goes to h-b first.
    assert {deployment_name(rank(variants, f"p{i}", cooling=other.cooling(["h-a", "h-b"]))[0])
            for i in range(40)} == {"h-b"}
    clock.now += 29
    assert other.cooling(["h-a"]) == {"h-a"}
    clock.now += 2  # recovered: back in routing, its own prefixes come back to it
    assert other.cooling(["h-a", "h-b"]) == set()
    assert {deployment_name(rank(variants, f"p{i}")[0]) for i in range(40)} == {"h-a", "h-b"}
    # A retry-after sets the cooldown instead of the default.
    one.cool("h-b", ProviderRetryable("429", provider="openai", status=429, retry_after=5))
    clock.now += 6
    assert other.cooling(["h-b"]) == set()


def test_a_deployment_past_its_own_budget_leaves_routing_for_the_day(redis_client: Any) -> None:
    clock, prefix = Clock(), f"t{uuid.uuid4().hex[:8]}:"
    h = health(redis_client, clock, prefix)
    variants = CAT.get("gpt-4o").variants
    b = next(v for v in variants if deployment_name(v) == "h-b")
    a = next(v for v in variants if deployment_name(v) == "h-a")
    h.add_spend(b, Decimal("0.006"))
    h.add_spend(a, Decimal("5"))  # no budget of its own: not counted, never out
    assert h.spent_out(variants) == set()
    h.add_spend(b, Decimal("0.004"))
    assert h.spent_out(variants) == {"h-b"}
    assert [deployment_name(v) for v in rank(variants, "k", spent_out=h.spent_out(variants))] \
        == ["h-a"]
    clock.now += 86400  # a new UTC day: back
    assert h.spent_out(variants) == set()


def test_only_the_deployments_own_trouble_cools_it() -> None:
    assert cools(ProviderRetryable("x", provider="openai", status=429))
    assert cools(ProviderRetryable("x", provider="openai", status=None))  # a timeout
    assert cools(ProviderPermanent("x", provider="openai", status=401))
    assert not cools(ProviderPermanent("x", provider="openai", status=400))


def test_redis_down_never_fails_routing() -> None:
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    h = DeploymentHealth(dead, cooldown_s=30.0)
    h.cool("h-a", ProviderRetryable("x", provider="openai", status=503))
    assert h.cooling(["h-a"]) == set()
    b = next(v for v in CAT.get("gpt-4o").variants if deployment_name(v) == "h-b")
    h.add_spend(b, Decimal("1"))
    assert h.spent_out([b]) == set()
