"""Governance on ``/v1/embeddings`` as on chat, through the official openai SDK: rate limits
(tokens are the inputs sent; a budget refusal gives the window back; the 429's headers read by
the SDK's retries; the async lane waits queued), and a key's lanes and model allow-list."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from models.db.budgets import set_budget
from models.db.rate_limits import remove_limit, set_limit
from models.domain.ratelimit import RateLimit
from tests.e2e.frontdoor_support import mint, row
from workers.providers.standin.embeddings_api import tokens_of

pytestmark = pytest.mark.integration

MODEL = "text-embedding-3-small"
#: The door reads the limits and budgets tables at most once a second.
TABLE_TTL_S = 1.2


def _team(sessions: Any, **limit: Any) -> str:
    team = f"egov{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_limit(s, RateLimit("team", team, **limit))
        s.commit()
    return team


@pytest.fixture()
def teams(sessions: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with sessions() as s:
        for team in made:
            remove_limit(s, "default", "team", team)
        s.commit()


def _sdk(door: str, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=retries, timeout=60)


def _fresh(n: int = 1) -> list[str]:
    """Inputs no other request sent (a cached item is not sent, so it is not rate limited)."""
    tag = uuid.uuid4().hex[:10]
    return [f"embedding governance {tag} {i}" for i in range(n)]


def _fill_window(sdk: openai.OpenAI, *, margin_s: float, tries: int = 8) -> None:
    """Return once a request was refused with at least ``margin_s`` left of the window, so
    the next one (sent at once) is refused too; a refusal with less left is waited out."""
    for _ in range(tries):
        try:
            sdk.embeddings.create(model=MODEL, input=_fresh())
        except openai.RateLimitError as exc:
            left = float(exc.response.headers["retry-after"])
            if left >= margin_s:
                return
            time.sleep(left + 0.05)
    raise AssertionError(f"no refusal with {margin_s} s of the window left in {tries} tries")


def test_a_429_with_x_ratelimit_headers_that_the_sdk_waits_out(
        door: str, pg_url: str, sessions: Any, teams: list[str]) -> None:
    team = _team(sessions, rpm=1, tpm=50_000, window_s=3)
    teams.append(team)
    time.sleep(TABLE_TTL_S)
    key = mint(pg_url, team)
    bare = _sdk(door, key)
    err = None
    for _ in range(4):  # the first call may straddle a window's end
        try:
            bare.embeddings.create(model=MODEL, input=_fresh())
        except openai.RateLimitError as exc:
            err = exc
            break
    assert err is not None, "the embeddings door never rate limited"
    h = err.response.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("1", "0")
    assert h["x-ratelimit-limit-tokens"] == "50000" and h["x-ratelimit-reset-requests"]
    assert 0 < float(h["retry-after"]) <= 3 and h["x-should-retry"] == "true"
    assert err.body["code"] == "rate_limited" and err.body["limit"] == f"team:{team}"
    patient = _sdk(door, key, retries=3)
    text = _fresh()
    # The patient call must meet a full window: refill it until a refusal says at least 1.5 s
    # of it are left (the first refusal above may have come just before the window rolled).
    _fill_window(bare, margin_s=1.5)
    raw = patient.embeddings.with_raw_response.create(model=MODEL, input=text)
    assert len(raw.parse().data[0].embedding) == 1536 and raw.retries_taken >= 1
    # The window is full again, but a wholly cached request sends nothing: it is answered.
    again = bare.embeddings.with_raw_response.create(model=MODEL, input=text)
    assert again.headers["x-sluice-cached-items"] == "1/1"
    bare.close()
    patient.close()


def test_tokens_counted_are_the_inputs_sent(door: str, pg_url: str, sessions: Any,
                                            teams: list[str]) -> None:
    tag = uuid.uuid4().hex[:6]
    pool = [f"governed chunk {tag} {i}" for i in range(400)]
    size = tokens_of(pool[0])
    same = [t for t in pool if tokens_of(t) == size]
    team = _team(sessions, tpm=5 * size, window_s=60)
    teams.append(team)
    time.sleep(TABLE_TTL_S)
    sdk = _sdk(door, mint(pg_url, team))
    err = None
    for text in same[:12]:
        try:
            sdk.embeddings.create(model=MODEL, input=text)
        except openai.RateLimitError as exc:
            err = exc
            break
    assert err is not None, "the token limit never refused"
    h = err.response.headers
    assert h["x-ratelimit-limit-tokens"] == str(5 * size)
    used = 5 * size - int(h["x-ratelimit-remaining-tokens"])
    # Every request added exactly its input's tokens (no max_tokens: an embedding has none).
    assert used % size == 0 and int(h["x-ratelimit-remaining-tokens"]) < size
    sdk.close()


def test_a_budget_refusal_gives_the_window_back(door: str, pg_url: str, sessions: Any,
                                                 teams: list[str]) -> None:
    for _ in range(3):  # a window's end between the calls would let the last one in
        team = _team(sessions, rpm=1, window_s=60)
        teams.append(team)
        with sessions() as s:  # room for a few tokens, not for 200 inputs
            set_budget(s, "team", team, "total", hard=Decimal("0.000001"))
            s.commit()
        time.sleep(TABLE_TTL_S)
        sdk = _sdk(door, mint(pg_url, team))
        start = int(time.time() // 60)
        with pytest.raises(openai.RateLimitError) as budget:
            sdk.embeddings.create(model=MODEL, input=_fresh(200))
        assert budget.value.body["code"] == "budget_exceeded"
        # The refused request holds no room: the window's one request is still free...
        ok = sdk.embeddings.with_raw_response.create(model=MODEL, input=_fresh())
        rid = ok.headers["x-sluice-request-id"]
        # ...and it is now taken.
        with pytest.raises(openai.RateLimitError) as limited:
            sdk.embeddings.create(model=MODEL, input=_fresh())
        sdk.close()
        if int(time.time() // 60) == start:
            break
    assert limited.value.body["code"] == "rate_limited"
    assert row(sessions, rid).kind == "embedding"


def test_an_async_request_over_a_limit_waits_in_its_queue(
        door: str, pg_url: str, sessions: Any, teams: list[str]) -> None:
    team = _team(sessions, rpm=1, window_s=3)
    teams.append(team)
    time.sleep(TABLE_TTL_S)
    sdk = _sdk(door, mint(pg_url, team))
    refused = False
    for _ in range(4):
        try:
            sdk.embeddings.create(model=MODEL, input=_fresh())
        except openai.RateLimitError:
            refused = True
            break
    assert refused
    # The same limit, full: on the async lane the request is deferred, not refused.
    text = _fresh()
    raw = sdk.embeddings.with_raw_response.create(model=MODEL, input=text,
                                                  extra_headers={"x-sluice-lane": "async"})
    assert len(raw.parse().data) == 1
    r = row(sessions, raw.headers["x-sluice-request-id"])
    assert (r.outcome, r.input_uncached) == ("ok", tokens_of(text[0]))
    sdk.close()


def test_a_keys_allow_list_and_lanes_hold_on_the_embeddings_door(
        door: str, pg_url: str, sessions: Any) -> None:
    key = mint(pg_url, "catalog", models=["text-embedding-3-large"], lanes=["interactive"])
    sdk = _sdk(door, key)
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.embeddings.create(model=MODEL, input="x")
    assert err.value.body["code"] == "not_allowed" and err.value.body["param"] == "model"
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.embeddings.create(model="text-embedding-3-large", input="x",
                              extra_headers={"x-sluice-lane": "async"})
    assert err.value.body["code"] == "lane_not_allowed"
    # `auto` (text-embedding-3-small for this feature) is clamped into the allow-list.
    raw = sdk.embeddings.with_raw_response.create(model="auto", input=_fresh())
    assert raw.parse().model == "text-embedding-3-large"
    assert len(raw.parse().data[0].embedding) == 3072
    assert row(sessions, raw.headers["x-sluice-request-id"]).model == "text-embedding-3-large"
    sdk.close()
    chat_only = _sdk(door, mint(pg_url, "catalog", models=["cheap"]))
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat_only.embeddings.create(model="auto", input="x")
    assert "no model this API key may use" in err.value.body["message"]
    chat_only.close()
