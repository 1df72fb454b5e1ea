"""The explicit-cache rule on a real Redis, through the SDK against the stand-in's clock.

Two ``ExplicitCaches`` with their own SDK clients stand for two workers sharing Redis; the
stand-in and both share one hand-driven clock, so TTLs, renewals and storage are exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.context_cache import break_even
from models.domain.cost import cost_of, storage_cost
from models.domain.request import parse_request
from models.domain.usage import Usage
from tests.services import run_token
from workers.providers.base import ProviderCall
from workers.providers.gemini import GeminiProvider
from workers.providers.gemini_cache import ExplicitCaches, Period, storage_amount
from workers.providers.shaping import static_tokens
from workers.providers.standin import ManualClock, StandIn, StandInConfig

pytestmark = pytest.mark.integration
CAT = load_catalogue()
FLASH = CAT.get("gemini-2.5-flash")
SYSTEM = "You write product copy for the store. " + " ".join(
    f"Rule {i}: keep the brand voice." for i in range(300))
TTL = 3600.0


class MemoryBooks:
    """Books that keep what was held and billed (the ledger's role, in memory)."""

    def __init__(self) -> None:
        self.held: list[Period] = []
        self.billed: list[tuple[Period, Decimal]] = []
        self.dropped = 0

    def hold(self, period: Period) -> Period:
        self.held.append(period)
        return period

    def book(self, period: Period, hold: Any) -> None:
        self.billed.append((period, storage_amount(period)))

    def drop(self, hold: Any) -> None:
        self.dropped += 1


@pytest.fixture
def world(redis_db_url: str) -> Iterator[dict[str, Any]]:
    import redis

    clock = ManualClock(start=time.time())
    # Implicit caching off (its entries expire at once): the explicit rule decides alone.
    server = StandIn(StandInConfig(clock=clock, gemini_implicit_ttl_s=0.0)).start()
    client = redis.Redis.from_url(redis_db_url)
    prefix = f"sggem{run_token()}:"
    books = MemoryBooks()
    workers = []
    for _ in range(2):
        prov = GeminiProvider(api_key="gm-key", base_url=server.gemini_base_url, timeout=5)
        workers.append((prov, ExplicitCaches(client, prov.client, books, CAT, ttl_s=TTL,
                                             key_prefix=prefix, clock=clock,
                                             cold_after_s=900)))
    yield {"clock": clock, "standin": server, "books": books, "workers": workers,
           "redis": client}
    for prov, _ in workers:
        prov.close()
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
    server.stop()


def ask(i: int) -> Any:
    return parse_request({"team": "web", "feature": "copy", "max_tokens": 40,
                          "model": "gemini-2.5-flash", "static": {"system": SYSTEM},
                          "messages": [{"role": "user", "content": f"Rephrase item {i}"}]})


def send(world: dict[str, Any], worker: int, i: int) -> tuple[str, Usage]:
    prov, caches = world["workers"][worker]
    req = ask(i)
    name = caches.for_request(req, FLASH)
    reply = prov.complete(ProviderCall(request=req, model=FLASH, cached_content=name))
    if not name:
        caches.note_implicit(req, FLASH, reply.usage.cache_read)
    return name, reply.usage


def test_a_cache_is_created_only_past_break_even_and_reused_by_another_worker(
        world: dict[str, Any]) -> None:
    stand = world["standin"]
    needed = break_even(FLASH, TTL, 0.0, creating=True)
    assert needed is not None and 4 < needed < 5  # (1.00 x 1 h + 0.30) / (0.30 - 0.03)
    for i in range(4):  # four requests in the window: below break-even, implicit only
        name, usage = send(world, i % 2, i)
        assert name == "" and usage.cache_read == 0
        world["clock"].advance(60)
    assert stand.stats()["gemini_caches"]["created"] == 0
    name, usage = send(world, 0, 4)  # the fifth pays: worker 0 creates the cache
    tokens = static_tokens(ask(0).static)
    assert name.startswith("cachedContents/") and usage.cache_read == tokens
    other, usage = send(world, 1, 5)  # worker 1 reuses it through Redis
    assert other == name and usage.cache_read == tokens
    assert stand.stats()["gemini_caches"]["created"] == 1
    (period, amount), = world["books"].billed
    assert period.kind == "create" and period.tokens == tokens and period.seconds == TTL
    assert amount == storage_cost(tokens, TTL, FLASH) + cost_of(Usage(input_uncached=tokens),
                                                                FLASH)
    assert period.owner == {"org": "default", "team": "web", "feature": "copy",
                            "lane": "interactive"}


def test_renewed_by_the_rule_deleted_when_cold_and_storage_billed_exactly(
        world: dict[str, Any]) -> None:
    clock, stand, books = world["clock"], world["standin"], world["books"]
    for i in range(6):
        send(world, i % 2, i)
        clock.advance(60)
    name = world["workers"][0][1]._entry(
        world["workers"][0][1].fingerprint(ask(0), FLASH))["name"]
    # 40 minutes on, still in use: less than half the TTL is left, so the next request renews.
    clock.advance(35 * 60)
    for i in range(6, 12):
        assert send(world, i % 2, i)[0] == name
        clock.advance(10)
    kinds = [p.kind for p, _ in books.billed]
    assert kinds == ["create", "renew"]
    # Then nobody asks for 20 minutes: cold, the sweep deletes it and credits the unused rest.
    clock.advance(20 * 60)
    assert world["workers"][1][1].sweep() == 1
    assert stand.stats()["gemini_caches"]["deleted"] == 1
    assert [p.kind for p, _ in books.billed] == ["create", "renew", "delete"]
    tokens = static_tokens(ask(0).static)
    billed_storage = sum(a for p, a in books.billed) - cost_of(Usage(input_uncached=tokens),
                                                               FLASH)
    provider_storage = (Decimal(str(stand.stats()["gemini_caches"]["storage_token_seconds"]))
                        * FLASH.price.storage_per_hour / 3600 / 1_000_000)
    assert abs(billed_storage - provider_storage) <= Decimal("1e-11")
    assert stand.stats()["gemini_caches"]["created_tokens"] == tokens
    # A request a TTL later starts over: one in its window, below break-even, no cache.
    clock.advance(TTL)
    assert send(world, 0, 99)[0] == ""


def test_implicit_hits_that_work_keep_explicit_caching_off(redis_db_url: str) -> None:
    import redis

    clock = ManualClock(start=time.time())
    with StandIn(StandInConfig(clock=clock, gemini_implicit_ttl_s=300.0)) as server:
        client = redis.Redis.from_url(redis_db_url)
        prov = GeminiProvider(api_key="gm-key", base_url=server.gemini_base_url, timeout=5)
        world = {"workers": [(prov, ExplicitCaches(client, prov.client, MemoryBooks(), CAT,
                                                   ttl_s=TTL, key_prefix=f"sgimp{run_token()}:",
                                                   clock=clock))]}
        hits = []
        for i in range(30):  # every 10 s: implicit caching serves nearly every request
            name, usage = send(world, 0, i)
            assert name == ""
            hits.append(usage.cache_read)
            clock.advance(10)
        prov.close()
        client.close()
        assert server.stats()["gemini_caches"]["created"] == 0
    assert sum(1 for h in hits if h) == 29
