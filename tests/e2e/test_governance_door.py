"""Rate limits and key policy at the doors: both doors' 429 headers read by the official SDKs
(refused without retries, answered after ``retry-after`` with them), the key's lanes and model
allow-list, expiry, and a team admin unable to touch another team."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import anthropic
import httpx
import openai
import pytest

from models.db.rate_limits import remove_limit, set_limit
from models.domain.ratelimit import RateLimit
from tests.e2e.frontdoor_support import mint, row, user
from tests.e2e.messages_support import CLAUDE, said

pytestmark = pytest.mark.integration


@pytest.fixture()
def limited(pg_url: str, sessions: Any) -> Any:
    """A fresh team allowed one request per 3-second window, and a key of it."""
    team = f"gov{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_limit(s, RateLimit("team", team, rpm=1, tpm=50_000, window_s=3))
        s.commit()
    time.sleep(1.2)  # the door reads the limits table at most once a second
    yield team, mint(pg_url, team)
    with sessions() as s:
        remove_limit(s, "default", "team", team)
        s.commit()


def _fill_window(send: Any, refused: type[Exception]) -> Exception:
    """Send until the window refuses (the first call may straddle a window's end)."""
    for _ in range(4):
        try:
            send()
        except refused as err:
            return err
    raise AssertionError("the limit never refused")


def test_the_openai_door_answers_429_with_x_ratelimit_headers_and_the_sdk_retries(
        door: str, limited: Any) -> None:
    _team, key = limited
    bare = openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=0, timeout=30)

    def send() -> Any:
        return bare.chat.completions.create(model="cheap", max_tokens=16,
                                            messages=[user("Title: mug")])

    err = _fill_window(send, openai.RateLimitError)
    assert isinstance(err, openai.RateLimitError)
    h = err.response.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("1", "0")
    assert h["x-ratelimit-limit-tokens"] == "50000" and h["x-ratelimit-reset-requests"]
    assert 0 < float(h["retry-after"]) <= 3 and h["x-should-retry"] == "true"
    assert err.body["code"] == "rate_limited" and err.body["limit"] == f"team:{_team}"
    # With retries, the SDK waits what retry-after says and the retry is admitted.
    patient = openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=3, timeout=30)
    raw = patient.chat.completions.with_raw_response.create(
        model="cheap", max_tokens=16, messages=[user("Title: mug")])
    assert raw.parse().choices[0].message.content
    assert raw.retries_taken >= 1
    bare.close()
    patient.close()


def test_the_messages_door_answers_429_with_anthropic_ratelimit_headers_and_the_sdk_retries(
        door: str, limited: Any) -> None:
    _team, key = limited
    bare = anthropic.Anthropic(api_key=key, base_url=door, max_retries=0, timeout=30)

    def send() -> Any:
        return bare.messages.create(model=CLAUDE, max_tokens=16,
                                    messages=[{"role": "user", "content": said("Hi")}])

    err = _fill_window(send, anthropic.RateLimitError)
    assert isinstance(err, anthropic.RateLimitError)
    h = err.response.headers
    assert h["anthropic-ratelimit-requests-limit"] == "1"
    assert h["anthropic-ratelimit-requests-remaining"] == "0"
    assert h["anthropic-ratelimit-tokens-limit"] == "50000"
    assert datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert 0 < float(h["retry-after"]) <= 3
    assert err.body["error"]["type"] == "rate_limit_error"
    patient = anthropic.Anthropic(api_key=key, base_url=door, max_retries=3, timeout=30)
    raw = patient.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=16, messages=[{"role": "user", "content": said("Hi")}])
    assert raw.parse().content[0].text
    assert raw.retries_taken >= 1
    bare.close()
    patient.close()


def test_the_keys_lanes_and_allow_list_hold_at_the_door(door: str, pg_url: str,
                                                         sessions: Any) -> None:
    key = mint(pg_url, "catalog", models=["cheap"], lanes=["interactive"])
    sdk = openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=0, timeout=30)
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.chat.completions.create(model="gpt-4o", max_tokens=8, messages=[user("Hi")])
    assert err.value.body["code"] == "not_allowed" and err.value.body["param"] == "model"
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.chat.completions.create(model="cheap", max_tokens=8, messages=[user("Hi")],
                                    extra_headers={"x-sluice-lane": "async"})
    assert err.value.body["code"] == "lane_not_allowed"
    # `flagship` is clamped into the allow-list: the cheap model answers.
    raw = sdk.chat.completions.with_raw_response.create(model="flagship", max_tokens=8,
                                                        messages=[user("Hi")])
    assert raw.parse().model == "gpt-4o-mini"
    assert row(sessions, raw.headers["x-sluice-request-id"]).model == "gpt-4o-mini"
    sdk.close()


def test_an_expired_key_is_refused_at_the_door(door: str, pg_url: str) -> None:
    key = mint(pg_url, "catalog", expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    sdk = openai.OpenAI(api_key=key, base_url=door + "/v1", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="cheap", max_tokens=8, messages=[user("Hi")])
    sdk.close()


def test_a_team_admin_acts_on_its_own_team_only(door: str, pg_url: str,
                                                sessions: Any) -> None:
    team, other = f"ta{uuid.uuid4().hex[:6]}", f"tb{uuid.uuid4().hex[:6]}"
    admin = {"authorization": f"Bearer {mint(pg_url, team, role='admin')}"}
    theirs = mint(pg_url, other)
    theirs_id = theirs.split("-")[2]
    made = httpx.post(door + "/admin/keys", headers=admin,
                      json={"team": team, "rpm": 5, "models": ["cheap"], "lanes": ["async"],
                            "metadata": {"svc": "search"}, "budget": {"hard": "2"}})
    assert made.status_code == 201, made.text
    assert (made.json()["team"], made.json()["rpm"], made.json()["models"]) == (team, 5,
                                                                               ["cheap"])
    for body in ({"team": other}, {"team": team, "role": "operator"},
                 {"team": team, "org": "elsewhere"}):
        r = httpx.post(door + "/admin/keys", headers=admin, json=body)
        assert r.status_code == 403, (body, r.text)
    listed = httpx.get(door + "/admin/keys", headers=admin)
    assert listed.status_code == 200 and {k["team"] for k in listed.json()["data"]} == {team}
    assert httpx.get(door + "/admin/keys", headers=admin,
                     params={"team": other}).status_code == 403
    assert httpx.delete(door + f"/admin/keys/{theirs_id}", headers=admin).status_code == 404
    # Within the team's limits: a team capped at 50 rpm gets no 100-rpm key from its admin.
    with sessions() as s:
        set_limit(s, RateLimit("team", team, rpm=50))
        s.commit()
    r = httpx.post(door + "/admin/keys", headers=admin, json={"team": team, "rpm": 100})
    assert r.status_code == 403 and r.json()["error"]["param"] == "rpm"
    with sessions() as s:
        remove_limit(s, "default", "team", team)
        s.commit()
    # A plain team key manages no keys at all.
    plain = {"authorization": f"Bearer {theirs}"}
    assert httpx.get(door + "/admin/keys", headers=plain).status_code == 403
