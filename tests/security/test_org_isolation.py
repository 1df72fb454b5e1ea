"""Through the real front door: jobs, billing headers, operator keys and cache entries stay
inside their tenant (org and team), with a real worker and PostgreSQL behind it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.db import ledger
from tests.e2e.frontdoor_support import mint, serve_frontdoor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def door(integration_settings: Any, gateway: Any) -> Iterator[str]:
    with serve_frontdoor(integration_settings) as url:
        yield url



def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _chat(door: str, key: str, content: str | None = None, **headers: str) -> httpx.Response:
    return httpx.post(f"{door}/v1/chat/completions", timeout=30,
                      headers={**_auth(key), **headers},
                      json={"model": "cheap", "max_tokens": 20, "messages": [
                          {"role": "user", "content": content or f"Tagline {_tag()}"}]})


def _poll(door: str, key: str, job_id: str, *, until: tuple[str, ...],
          query: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        got = httpx.get(f"{door}/v1/jobs/{job_id}{query}", headers=_auth(key), timeout=10)
        job = got.json()
        if got.status_code != 200 or job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def _row(sessions: Any, request_id: str) -> Any:
    with sessions() as s:
        return ledger.get(s, request_id)


def _key_id(token: str) -> str:
    return token[len("sk-sluice-"):][:12]


def test_a_reused_job_id_keeps_each_teams_record(door: str, pg_url: str, gateway: Any,
                                                 sessions: Any) -> None:
    a, b = mint(pg_url, f"jobs-a-{_tag()}"), mint(pg_url, f"jobs-b-{_tag()}")
    rid = f"shared-{uuid.uuid4().hex}"
    mine = _chat(door, a, **{"x-sluice-lane": "async", "x-sluice-request-id": rid})
    assert mine.status_code == 202
    assert _poll(door, a, rid, until=("completed", "failed"))["status"] == "completed"
    control = gateway.app.control
    control.cancel_consumer("async.api", reply=True, timeout=10)
    try:
        # Team B picks the same id: its job is its own record, not a replacement of A's.
        theirs = _chat(door, b, **{"x-sluice-lane": "async", "x-sluice-request-id": rid})
        assert theirs.status_code == 202
        owner = httpx.get(f"{door}/v1/jobs/{rid}", headers=_auth(a), timeout=10)
        assert owner.status_code == 200 and owner.json()["status"] == "completed", owner.text
        again = httpx.delete(f"{door}/v1/jobs/{rid}", headers=_auth(a), timeout=10)
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
        # A's ledger row is not B's claim: B's queued job is not "started" (no false 409).
        assert httpx.get(f"{door}/v1/jobs/{rid}", headers=_auth(b),
                         timeout=10).json()["status"] == "queued"
        gone = httpx.delete(f"{door}/v1/jobs/{rid}", headers=_auth(b), timeout=10)
        assert gone.status_code == 202, gone.text
    finally:
        control.add_consumer("async.api", reply=True, timeout=10)
    end = _poll(door, b, rid, until=("cancelled", "failed", "completed"))
    assert end["status"] in ("cancelled", "failed"), end  # never run under A's id
    row = _row(sessions, rid)
    assert row.team.startswith("jobs-a-") and row.outcome == "ok"


def test_a_key_bills_only_the_features_it_is_bound_to(door: str, pg_url: str,
                                                      sessions: Any) -> None:
    key = mint(pg_url, f"bound-{_tag()}", feature="listing", allow_features=["seo"])
    dodge = _chat(door, key, **{"x-sluice-feature": "search"})
    assert dodge.status_code == 403, dodge.text
    err = dodge.json()["error"]
    assert err["code"] == "feature_not_allowed" and err["param"] == "x-sluice-feature"
    assert "'search'" in err["message"] and "listing" in err["message"]
    # No header: the key's own feature; a header the key allows still wins.
    plain = _chat(door, key)
    assert plain.status_code == 200, plain.text
    assert _row(sessions, plain.headers["x-sluice-request-id"]).feature == "listing"
    seo = _chat(door, key, **{"x-sluice-feature": "seo"})
    assert _row(sessions, seo.headers["x-sluice-request-id"]).feature == "seo"


def test_a_key_bound_to_a_user_cannot_bill_another(door: str, pg_url: str,
                                                   sessions: Any) -> None:
    key = mint(pg_url, f"person-{_tag()}", allow_users=["ann"])
    other = _chat(door, key, **{"x-sluice-user": "bob"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "user_not_allowed"
    body_user = httpx.post(f"{door}/v1/chat/completions", headers=_auth(key), timeout=30,
                           json={"model": "cheap", "max_tokens": 20, "user": "bob",
                                 "messages": [{"role": "user", "content": f"Hi {_tag()}"}]})
    assert body_user.status_code == 403
    own = _chat(door, key)
    assert own.status_code == 200
    assert _row(sessions, own.headers["x-sluice-request-id"]).user == "ann"


def test_operator_keys_act_in_their_own_org(door: str, pg_url: str) -> None:
    acme, globex = f"acme-{_tag()}", f"globex-{_tag()}"
    op_key = mint(pg_url, "ops", org=acme, role="operator")
    op = _auth(op_key)
    mine, theirs = mint(pg_url, "shop", org=acme), mint(pg_url, "shop", org=globex)
    listed = httpx.get(f"{door}/admin/keys", headers=op, timeout=10).json()["data"]
    assert {k["org"] for k in listed} == {acme}
    assert _key_id(mine) in {k["id"] for k in listed}
    assert httpx.get(f"{door}/admin/keys?org={globex}", headers=op,
                     timeout=10).status_code == 403
    minted = httpx.post(f"{door}/admin/keys", headers=op, json={"team": "x"}, timeout=10)
    assert minted.status_code == 201 and minted.json()["org"] == acme
    foreign = httpx.post(f"{door}/admin/keys", headers=op, json={"team": "x", "org": globex},
                         timeout=10)
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "org_not_allowed"
    wide = httpx.post(f"{door}/admin/keys", headers=op, timeout=10,
                      json={"team": "x", "role": "operator", "all_orgs": True})
    assert wide.status_code == 403
    # Another org's key cannot be revoked (it is "not found"), and keeps working.
    revoke = httpx.delete(f"{door}/admin/keys/{_key_id(theirs)}", headers=op, timeout=10)
    assert revoke.status_code == 404
    assert httpx.get(f"{door}/v1/models", headers=_auth(theirs), timeout=10).status_code == 200
    # Another org's jobs are out of reach too; its own teams' are not.
    job = _chat(door, theirs, **{"x-sluice-lane": "async"}).json()["id"]
    assert httpx.get(f"{door}/v1/jobs/{job}?team=shop", headers=op,
                     timeout=10).status_code == 404
    assert httpx.get(f"{door}/v1/jobs/{job}?team=shop&org={globex}", headers=op,
                     timeout=10).status_code == 403
    own = _chat(door, mine, **{"x-sluice-lane": "async"}).json()["id"]
    assert _poll(door, op_key, own, until=("completed", "failed"),
                 query="?team=shop")["status"] == "completed"
    # A deployment-wide operator key, minted so explicitly, reaches every org.
    admin = _auth(mint(pg_url, "platform", role="operator", all_orgs=True))
    every = httpx.get(f"{door}/admin/keys?org={globex}", headers=admin, timeout=10).json()
    assert _key_id(theirs) in {k["id"] for k in every["data"]}
    assert httpx.get(f"{door}/v1/jobs/{job}?team=shop&org={globex}", headers=admin,
                     timeout=10).status_code == 200


def test_response_cache_entries_are_scoped_by_org(door: str, pg_url: str) -> None:
    # Same team and feature names, same prompt, two orgs: the second org never reads the
    # first one's answer.
    acme, globex = mint(pg_url, "shop", org=f"acme-{_tag()}"), mint(pg_url, "shop",
                                                                    org=f"globex-{_tag()}")
    prompt = f"Rephrase: oak shelf {_tag()}"
    assert _chat(door, acme, prompt).headers["x-sluice-cache"] == "miss"
    assert _chat(door, acme, prompt).headers["x-sluice-cache"] == "hit"  # the control
    assert _chat(door, globex, prompt).headers["x-sluice-cache"] == "miss"
