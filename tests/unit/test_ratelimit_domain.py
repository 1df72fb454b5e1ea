"""Which rate limits apply to a request (every scope, its own org's and every org's), what one
admission adds to each window, and the limits that could never admit anything."""

from __future__ import annotations

import pytest

from models.domain.errors import ValidationError
from models.domain.ratelimit import (RateLimit, applicable_limits, charges_for, check_limit,
                                     deployment_of)
from models.domain.request import ChatRequest
from models.domain.result import Route
from scheduler.ratelimit import Grant

ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive")


def test_every_scope_of_the_request_and_no_other_orgs_limit_applies() -> None:
    req = ChatRequest(org="acme", team="cat", feature="seo", api_key="abc123abc123",
                      messages=[{"role": "user", "content": "hi"}])
    mine = [RateLimit("org", "acme", "acme", rpm=1), RateLimit("team", "cat", "acme", rpm=1),
            RateLimit("key", "abc123abc123", "acme", rpm=1),
            RateLimit("feature", "seo", "acme", tpm=9),
            RateLimit("model", "gpt-4o-mini", "*", rpm=1),
            RateLimit("deployment", deployment_of(ROUTE), "*", tpm=9)]
    others = [RateLimit("team", "cat", "globex", rpm=1), RateLimit("team", "dog", "acme", rpm=1),
              RateLimit("model", "gpt-4o", "*", rpm=1)]
    index: dict[tuple[str, str, str], list[RateLimit]] = {}
    for lim in mine + others:
        index.setdefault((lim.org, lim.scope, lim.key), []).append(lim)
    found = applicable_limits(req, ROUTE, index)
    assert [lim.scope for lim in found] == ["org", "team", "key", "feature", "model",
                                            "deployment"]
    charges = charges_for(found, 5)
    assert [(c.name, c.kind, c.cost) for c in charges] == [
        ("org:acme", "requests", 1), ("team:cat", "requests", 1),
        ("key:abc123abc123", "requests", 1), ("feature:seo", "tokens", 5),
        ("model:gpt-4o-mini", "requests", 1), ("deployment:openai/gpt-4o-mini", "tokens", 5)]
    assert charges_for(found, 9)  # a whole window's tokens fit; one more never could
    with pytest.raises(ValidationError):
        charges_for(found, 10)


def test_a_window_is_named_by_its_index_and_resets_at_its_end() -> None:
    (c,) = charges_for([RateLimit("team", "t", rpm=3, window_s=10)], 1)
    assert c.counter("p:", 1005.0) == "p:rl:default:team:t:requests:10:100"
    assert c.counter("p:", 1009.9) == c.counter("p:", 1000.0) != c.counter("p:", 1010.0)
    assert c.resets_in(1007.5) == pytest.approx(2.5)


@pytest.mark.parametrize("bad", [RateLimit("lane", "x", rpm=1), RateLimit("team", "t"),
                                 RateLimit("team", "t", rpm=0),
                                 RateLimit("team", "t", tpm=5, window_s=0)])
def test_limits_that_could_never_admit_are_refused(bad: RateLimit) -> None:
    with pytest.raises(ValidationError):
        check_limit(bad)


def test_a_grant_crosses_the_queue_whole() -> None:
    grant = Grant((("k1", "requests", 1), ("k2", "tokens", 40)))
    assert Grant.from_json(grant.to_json()) == grant and Grant.from_json(None) is None
