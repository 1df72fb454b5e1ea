"""Keys as policy: expiry, rotation with a grace period, updates, the allow-list overriding the
router, the limits a team admin mints within, and the 429 headers of each door."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.db.api_keys import create_key, rotate_key, update_key, verify_key
from models.db.budgets import set_budget
from models.db.engine import make_engine, session_factory
from models.db.key_policy import KeyBudget, check_within_team
from models.db.rate_limits import set_limit
from models.domain.catalogue import load_catalogue
from models.domain.errors import NotAllowed, RateLimited
from models.domain.ratelimit import RateLimit
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings
from queues.http.errors import problem_of
from queues.http.rate_headers import anthropic_headers, openai_headers
from scheduler.route import decide_route

CAT = load_catalogue()
ROUTING = RoutingSettings()


@pytest.fixture()
def sessions(tmp_path: Path) -> Any:
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def test_an_expired_key_is_refused(sessions: Any) -> None:
    now = datetime.now(timezone.utc)
    with sessions() as s:
        live, _ = create_key(s, team="t", expires_at=now + timedelta(hours=1))
        dead, _ = create_key(s, team="t", expires_at=now - timedelta(seconds=1))
        s.commit()
        info = verify_key(s, live)
        assert info is not None and info.expires_at is not None and not info.expired()
        assert verify_key(s, dead) is None


def test_rotation_keeps_the_old_secret_for_its_grace_only(sessions: Any) -> None:
    now = datetime.now(timezone.utc)
    with sessions() as s:
        old, info = create_key(s, team="t", rpm=10, models=["cheap"])
        s.commit()
        new, rotated = rotate_key(s, info.id, grace=timedelta(minutes=5), now=now) or ("", None)
        s.commit()
        assert rotated is not None and rotated.id == info.id and rotated.rpm == 10
        assert new != old
        assert verify_key(s, new) is not None
        during = verify_key(s, old)
        # The old secret works, and says when it stops (the door refuses it after that).
        assert during is not None and during.expires_at is not None
        assert during.expires_at <= now + timedelta(minutes=5, seconds=1)
        assert not during.expired(now) and during.expired(now + timedelta(minutes=6))
        # A second rotation ends the first old secret's grace: only the last two work.
        newer, _ = rotate_key(s, info.id, grace=timedelta(0)) or ("", None)
        s.commit()
        assert verify_key(s, old) is None and verify_key(s, new) is None
        assert verify_key(s, newer) is not None


def test_an_update_changes_the_policy_and_a_revoked_key_has_none(sessions: Any) -> None:
    with sessions() as s:
        token, info = create_key(s, team="t", lanes=["interactive"], metadata={"owner": "ana"})
        s.commit()
        changed = update_key(s, info.id, tpm=5000, lanes=None)
        s.commit()
        assert changed is not None and changed.tpm == 5000 and changed.lanes is None
        assert dict(changed.metadata) == {"owner": "ana"}
        assert update_key(s, info.id, team="other", rpm=1) is None  # another team's: no
        with pytest.raises(ValueError):
            update_key(s, info.id, lanes=["batchy"])


def _req(model: str, text: str, allowed: list[str] | None) -> Any:
    return parse_request({"team": "t", "feature": "f", "model": model, "allowed_models": allowed,
                          "messages": [{"role": "user", "content": text}]})


class Flagship:
    """A router that always picks the flagship tier."""

    name = "always-flagship"

    def score(self, request: Any) -> float:
        return 0.0


def test_the_allow_list_overrides_the_router() -> None:
    free = decide_route(_req("auto", "hi", None), CAT, ROUTING, scorer=Flagship())
    assert free.model == ROUTING.flagship_model
    clamped = decide_route(_req("auto", "hi", ["cheap"]), CAT, ROUTING, scorer=Flagship())
    assert clamped.model == ROUTING.cheap_model and "allow-list" in clamped.reason
    named = decide_route(_req("flagship", "hi", [ROUTING.cheap_model]), CAT, ROUTING)
    assert named.model == ROUTING.cheap_model
    with pytest.raises(NotAllowed) as err:
        decide_route(_req(ROUTING.flagship_model, "hi", ["cheap"]), CAT, ROUTING)
    assert err.value.field == "model" and "may not use" in err.value.message


def test_a_team_admin_mints_within_the_teams_limits(sessions: Any) -> None:
    with sessions() as s:
        set_limit(s, RateLimit("team", "t", rpm=100, tpm=10_000))
        set_budget(s, "team", "t", "daily", hard=Decimal("5"))
        s.commit()
        check_within_team(s, "default", "t", rpm=100, tpm=10_000,
                          budget=KeyBudget(Decimal("5")))
        for kw in ({"rpm": 101, "tpm": 10}, {"rpm": None, "tpm": 10}, {"rpm": 5, "tpm": 10_001}):
            with pytest.raises(NotAllowed):
                check_within_team(s, "default", "t", budget=None, **kw)
        with pytest.raises(NotAllowed) as err:
            check_within_team(s, "default", "t", rpm=1, tpm=1, budget=KeyBudget(Decimal("6")))
        assert err.value.field == "budget"
        # Another team's limits are not this team's.
        check_within_team(s, "default", "u", rpm=10**6, tpm=None, budget=None)


def test_each_door_names_the_refusing_limit_in_its_own_headers() -> None:
    err = RateLimited("full", limit="key:k", retry_after_s=1.5, kind="requests", window_s=60,
                      rate={"requests": {"limit": 3, "remaining": 0, "reset_s": 1.5},
                            "tokens": {"limit": 900, "remaining": 120, "reset_s": 1.5}})
    problem = problem_of(err)
    assert problem.status == 429 and problem.retry is True
    base = problem.response_headers()
    assert base["retry-after"] == "1.5" and base["x-should-retry"] == "true"
    assert openai_headers(problem.rate) == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1.5s", "x-ratelimit-limit-tokens": "900",
        "x-ratelimit-remaining-tokens": "120", "x-ratelimit-reset-tokens": "1.5s",
        "retry-after-ms": "1500"}
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
    assert anthropic_headers(problem.rate, now) == {
        "anthropic-ratelimit-requests-limit": "3", "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-12-02T12:00:01Z",
        "anthropic-ratelimit-tokens-limit": "900", "anthropic-ratelimit-tokens-remaining": "120",
        "anthropic-ratelimit-tokens-reset": "2026-12-02T12:00:01Z"}
