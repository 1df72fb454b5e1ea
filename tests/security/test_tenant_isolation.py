"""One team's answers, jobs and spend are never visible to another team, on every surface."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.frontdoor_support import mint, serve_frontdoor

pytestmark = pytest.mark.integration


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _req(team: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"team": team, "feature": "iso-feature", "lane": "interactive", "model": "gpt-4o-mini",
            "max_tokens": 20, "messages": [{"role": "user", "content": content}], **extra}


def test_producer_cache_is_scoped_by_team(gateway: Any) -> None:
    prompt = f"Rephrase: walnut desk {_tag()}"
    a = f"iso-a-{_tag()}"
    b = f"iso-b-{_tag()}"
    gateway.complete(_req(a, prompt + " 2"), timeout=30)
    hit = gateway.complete(_req(a, prompt + " 2"), timeout=30)
    assert hit.cache_hit  # the control: the same team does read its own answer
    other = gateway.complete(_req(b, prompt + " 2"), timeout=30)
    assert not other.cache_hit


def test_a_reused_request_id_never_returns_another_teams_answer(gateway: Any) -> None:
    rid = f"iso-{uuid.uuid4().hex}"
    secret_answer = gateway.complete(_req("iso-owner", "Summarise our private roadmap",
                                          request_id=rid, cache={"mode": "bypass"}), timeout=30)
    from models.domain.errors import ValidationError

    # The task id is scoped to the tenant and the ledger refuses a foreign claim: team B gets
    # a typed error naming request_id, never team A's answer.
    with pytest.raises(ValidationError) as exc:
        gateway.complete(_req("iso-thief", "anything", request_id=rid,
                              cache={"mode": "bypass"}), timeout=30)
    assert exc.value.field == "request_id" and secret_answer.text not in exc.value.message


@pytest.fixture(scope="module")
def door(integration_settings: Any, gateway: Any) -> Iterator[str]:
    with serve_frontdoor(integration_settings) as url:
        yield url


def _chat(door: str, key: str, content: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{door}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}", **headers},
                      json={"model": "cheap", "max_tokens": 20,
                            "messages": [{"role": "user", "content": content}]})


def test_front_door_cache_jobs_and_ids_are_per_team(door: str, pg_url: str) -> None:
    a, b = mint(pg_url, f"fd-a-{_tag()}"), mint(pg_url, f"fd-b-{_tag()}")
    prompt = f"Rephrase: linen curtain {_tag()}"
    assert _chat(door, a, prompt).headers["x-sluice-cache"] == "miss"
    assert _chat(door, a, prompt).headers["x-sluice-cache"] == "hit"
    other = _chat(door, b, prompt)
    assert other.status_code == 200 and other.headers["x-sluice-cache"] == "miss"
    # An async job of team A is not found with team B's key.
    job = _chat(door, a, f"Tagline {_tag()}", **{"x-sluice-lane": "async"}).json()
    deadline = time.monotonic() + 30
    while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = httpx.get(f"{door}/v1/jobs/{job['id']}", headers={"authorization": f"Bearer {a}"}
                        ).json()
    assert job["status"] == "completed"
    stranger = httpx.get(f"{door}/v1/jobs/{job['id']}", headers={"authorization": f"Bearer {b}"})
    assert stranger.status_code == 404
    # Team keys cannot reach the operator endpoints (which list every team's keys).
    assert httpx.get(f"{door}/admin/keys", headers={"authorization": f"Bearer {b}"}
                     ).status_code in (401, 403)


def test_cli_team_scope_shows_only_that_team(gateway: Any, integration_env: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = f"cli-a-{_tag()}", f"cli-b-{_tag()}"
    for team in (a, b):
        gateway.complete(dict(_req(team, f"Rephrase: vase {team}"), feature=f"feat-{team}"),
                         timeout=30)
    for name, value in integration_env.items():
        monkeypatch.setenv(name, value)
    from ops.cli import main

    main._mount_subcommands()
    runner = CliRunner()
    for args in (["spend", "--by", "team,feature", "--team", a, "--json"],
                 ["cache", "stats", "--team", a, "--json"]):
        out = runner.invoke(main.app, args)
        assert out.exit_code == 0, out.output
        assert b not in out.output, args
    spend = runner.invoke(main.app, ["spend", "--by", "team,feature", "--team", a, "--json"])
    assert a in spend.output and json.loads(spend.output)


def test_front_door_request_id_reuse_does_not_cross_teams(door: str, pg_url: str) -> None:
    a, b = mint(pg_url, f"fd-a-{_tag()}"), mint(pg_url, f"fd-b-{_tag()}")
    # Reusing team A's request id with team B's key must not hand B team A's answer.
    rid = f"fd-{uuid.uuid4().hex}"
    mine = _chat(door, a, f"Private note {_tag()}", **{"x-sluice-request-id": rid,
                                                        "x-sluice-cache-mode": "bypass"})
    assert mine.status_code == 200
    theirs = _chat(door, b, "hello", **{"x-sluice-request-id": rid,
                                        "x-sluice-cache-mode": "bypass"})
    assert theirs.status_code == 400, theirs.text
    assert theirs.json()["error"]["param"] in ("request_id", "x-sluice-request-id")
    assert mine.json()["choices"][0]["message"]["content"] not in theirs.text
