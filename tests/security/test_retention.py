"""Prompt text is stored only for opted-in features and deleted by the beat job after retention."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db.engine import make_engine, session_factory
from models.db.stored_text import StoredTextRow, delete_expired, store_if_opted
from models.domain.request import parse_request
from models.domain.settings import PrivacySettings, load_settings
from ops.db import upgrade


@pytest.fixture()
def sessions(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def _request(feature: str) -> Any:
    return parse_request({"team": "support", "feature": feature, "request_id": uuid.uuid4().hex,
                          "static": {"system": "Be kind."},
                          "messages": [{"role": "user", "content": "Where is order 42?"}]})


def test_text_is_kept_only_for_opted_in_features(sessions: Any) -> None:
    privacy = PrivacySettings(store_text_features=["support-faq"], retention_days=3)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    opted, other = _request("support-faq"), _request("title-rephrase")
    with sessions() as s:
        assert store_if_opted(s, privacy, opted, "In transit.", now=now)
        assert not store_if_opted(s, privacy, opted, "again", now=now)  # idempotent
        assert not store_if_opted(s, privacy, other, "Nope.", now=now)
        s.commit()
        rows = s.scalars(select(StoredTextRow)).all()
    assert [r.request_id for r in rows] == [opted.request_id]
    assert "Where is order 42?" in rows[0].prompt and rows[0].answer == "In transit."
    assert rows[0].expires_at.replace(tzinfo=timezone.utc) == now + timedelta(days=3)


def test_default_settings_store_nothing(sessions: Any) -> None:
    settings = load_settings({})
    assert settings.privacy.store_text_features == []
    with sessions() as s:
        assert not store_if_opted(s, settings.privacy, _request("support-faq"), "x")


def test_purge_deletes_only_expired_text(sessions: Any) -> None:
    privacy = PrivacySettings(store_text_features=["f"], retention_days=1)
    now = datetime.now(timezone.utc)
    old, fresh = _request("f"), _request("f")
    with sessions() as s:
        store_if_opted(s, privacy, old, "a", now=now - timedelta(days=2))
        store_if_opted(s, privacy, fresh, "b", now=now)
        s.commit()
        assert delete_expired(s, now=now) == 1
        s.commit()
        left = s.scalars(select(StoredTextRow.request_id)).all()
    assert left == [fresh.request_id]


def test_two_orgs_keep_their_own_text_of_one_request_id(pg_url: str) -> None:
    # Request ids are the callers': two orgs with a team of the same name can send the same
    # one. Keyed by the id alone, the second org's text was silently dropped.
    privacy = PrivacySettings(store_text_features=["f"], retention_days=1)
    rid = uuid.uuid4().hex
    reqs = {org: parse_request({"org": org, "team": "support", "feature": "f",
                                "request_id": rid,
                                "messages": [{"role": "user", "content": f"I am {org}"}]})
            for org in ("acme", "globex")}
    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            for org, req in reqs.items():
                assert store_if_opted(s, privacy, req, f"answer for {org}")
            assert not store_if_opted(s, privacy, reqs["acme"], "again")  # still idempotent
            s.commit()
            rows = s.execute(select(StoredTextRow.org, StoredTextRow.prompt,
                                    StoredTextRow.answer)
                             .where(StoredTextRow.request_id == rid)
                             .order_by(StoredTextRow.org)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("acme", "user: I am acme", "answer for acme"),
                                        ("globex", "user: I am globex", "answer for globex")]


@pytest.mark.integration
def test_nul_in_a_prompt_or_answer_is_stored_not_refused(pg_url: str) -> None:
    """PostgreSQL text cannot hold NUL; the row (and the ledger write it shares a transaction
    with) must still land."""
    privacy = PrivacySettings(store_text_features=["nul"], retention_days=1)
    req = parse_request({"team": "support", "feature": "nul", "request_id": uuid.uuid4().hex,
                         "messages": [{"role": "user", "content": "a\x00b"}]})
    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            assert store_if_opted(s, privacy, req, "c\x00d\ud800")  # a lone surrogate too
            s.commit()
            row = s.get(StoredTextRow, ("default", "support", req.request_id))
        assert row is not None and "a\ufffdb" in row.prompt and row.answer == "c\ufffdd?"
    finally:
        engine.dispose()


def test_purge_is_scheduled_and_found_by_workers() -> None:
    from queues.app import TASK_MODULES, celery_config
    from scheduler.beat import GOVERNOR_QUEUE
    from scheduler.privacy_beat import PURGE_TASK

    settings = load_settings({"SLUICE_PRIVACY__PURGE_INTERVAL_S": "60"})
    entry = celery_config(settings)["beat_schedule"]["sluice-privacy-purge-text"]
    assert entry["task"] == PURGE_TASK and entry["schedule"] == 60.0
    assert entry["options"]["queue"] == GOVERNOR_QUEUE
    assert "workers.privacy_tasks" in TASK_MODULES


@pytest.mark.integration
def test_worker_stores_text_only_for_the_opted_in_feature(secret_gateway: Any, pg_url: str,
                                                         secret_settings: Any) -> None:
    from tests.security.conftest import TEXT_FEATURE

    ids = {}
    for feature in (TEXT_FEATURE, "title-rephrase"):
        rid = f"ret-{uuid.uuid4().hex}"
        ids[feature] = rid
        secret_gateway.complete({"team": "support", "feature": feature, "request_id": rid,
                                 "model": "gpt-4o-mini", "max_tokens": 10,
                                 "cache": {"mode": "bypass"},
                                 "messages": [{"role": "user", "content": f"hello {feature}"}]},
                                timeout=30)
    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            kept = {r.request_id: r for r in s.scalars(select(StoredTextRow).where(
                StoredTextRow.request_id.in_(list(ids.values()))))}
    finally:
        engine.dispose()
    assert set(kept) == {ids[TEXT_FEATURE]}
    row = kept[ids[TEXT_FEATURE]]
    assert f"hello {TEXT_FEATURE}" in row.prompt and row.answer
    assert (row.org, row.team) == ("default", "support")  # the request's tenant, as it was sent
    days = (row.expires_at - row.created_at).total_seconds() / 86400
    assert abs(days - secret_settings.privacy.retention_days) < 1e-6
    # An expired row, then the purge task sent through the broker the way beat sends it.
    from scheduler.privacy_beat import PURGE_TASK

    privacy = PrivacySettings(store_text_features=["old"], retention_days=1)
    stale = _request("old")
    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            store_if_opted(s, privacy, stale, "x",
                           now=datetime.now(timezone.utc) - timedelta(days=2))
            s.commit()
        secret_gateway.app.send_task(PURGE_TASK, queue="sluice.governor",
                                     routing_key="sluice.governor", ignore_result=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            with session_factory(engine)() as s:
                if s.get(StoredTextRow, ("default", "support", stale.request_id)) is None:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the purge task did not delete the expired text within 20 s")
        with session_factory(engine)() as s:
            # Unexpired text stays.
            assert s.get(StoredTextRow, ("default", "support", ids[TEXT_FEATURE])) is not None
    finally:
        engine.dispose()


def test_kept_responses_expire_with_the_retention_and_stay_with_their_team(
        sessions: Any) -> None:
    from models.db import stored_responses as kept

    now = datetime.now(timezone.utc)
    body = {"id": "resp_a", "output": []}
    with sessions() as s:
        for rid, when in (("old", now - timedelta(days=2)), ("new", now)):
            kept.keep(s, org="o", team="t", feature="f", response_id=rid, body=body,
                      input_items=[], context=[{"role": "user", "content": "hi"}],
                      retention_days=1, now=when)
        s.commit()
        # Past its expiry a response is gone for readers even before the purge runs.
        assert kept.read(s, org="o", team="t", response_id="old", now=now) is None
        assert kept.read(s, org="o", team="other", response_id="new", now=now) is None
        assert kept.read(s, org="o", team="t", response_id="new", now=now).context
        assert kept.delete_expired(s, now=now) == 1
        s.commit()
        left = s.scalars(select(kept.StoredResponseRow.id)).all()
    assert left == ["new"]
