"""The quality floor per org, on PostgreSQL: two orgs with a feature of the same name are judged
on their own pairs, moved on their own (one org's wrong cheap answers never send the other's
traffic to the flagship), locked on their own, and reverted on their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from models.db import audit
from models.db import quality as repo
from models.domain.request import parse_request
from models.domain.result import ChatResult, Route
from models.domain.settings import load_settings
from queues.envelope import Envelope
from tests.services import run_token

pytestmark = pytest.mark.integration
TOKEN = run_token()
FEATURE = f"search-{TOKEN}"
A, B = f"acme-{TOKEN}", f"bolt-{TOKEN}"  # two orgs that both named a feature FEATURE
THRESHOLD = 0.3  # the operator's threshold of FEATURE (deployment config, every org's)
ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="async")


@pytest.fixture(scope="module")
def settings(pg_url: str) -> Any:
    guard = {"judge": "exact", "floor": 0.6, "release": 0.95, "min_pairs": 8, "step": 1.0,
             "shadow_cheap": 1.0}
    return load_settings({"SLUICE_DATABASE__URL": pg_url,
                          "SLUICE_QUALITY__FEATURES": json.dumps({FEATURE: guard}),
                          "SLUICE_ROUTING__POLICIES": json.dumps(
                              [{"feature": FEATURE, "threshold": THRESHOLD}])})


class Runtime:
    """What the judging step reads of a worker's runtime: settings and ledger sessions."""

    def __init__(self, settings: Any, sessions: Any) -> None:
        self.settings, self.sessions = settings, sessions

    @contextmanager
    def session(self) -> Iterator[Any]:
        with self.sessions() as s:
            yield s
            s.commit()


def _judge(rt: Runtime, org: str, i: int, *, agree: bool) -> None:
    """A cheap answer of ``org``'s FEATURE and its flagship shadow, through the worker's
    judging step (which applies the floor)."""
    from workers import judging

    served = f"{org}-{i}"
    req = parse_request({"org": org, "team": "search", "feature": FEATURE,
                         "request_id": f"{served}:shadow", "model": "gpt-4o",
                         "messages": [{"role": "user", "content": f"Classify query {i}"}]})
    env = Envelope(request=req, route=ROUTE, pair={
        "role": "shadow", "of": served, "served_tier": "cheap", "served_model": "gpt-4o-mini",
        "served_text": "electronics" if agree else "garden", "served_cost": "0.001"})
    judging.judge_pair(rt, env, ChatResult(request_id=req.request_id, text="electronics",
                                           provider="openai", model="gpt-4o", route=ROUTE,
                                           cost=Decimal("0.004")))


def _routed(routers: Any, org: str) -> Any:
    """The tier decision the producer's RouterSet makes for a request of ``org``'s FEATURE."""
    return routers.decide(parse_request({"org": org, "team": "search", "feature": FEATURE,
                                         "messages": [{"role": "user",
                                                       "content": "Rephrase: hi"}]}))


def _routers(sessions: Any) -> Any:
    from queues.wiring import _router

    return _router(load_settings({"SLUICE_ROUTING__POLICIES": json.dumps(
        [{"feature": FEATURE, "threshold": THRESHOLD}]),
        "SLUICE_QUALITY__FEATURES": json.dumps({FEATURE: {"floor": 0.6}})}), sessions)


def test_one_orgs_wrong_cheap_answers_move_only_its_own_feature_and_revert_per_org(
        settings: Any, sessions: Any, pg_url: str, monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from ops.cli.quality import quality_app as app
    from scheduler.quality_floor import ALL_FLAGSHIP

    rt = Runtime(settings, sessions)
    routers = _routers(sessions)
    routers.moves.ttl_s = 0.0  # read the moves at every decision
    for i in range(10):  # interleaved, as two orgs' traffic is
        _judge(rt, A, i, agree=False)
        _judge(rt, B, i, agree=True)
    # B's routing is as the operator configured it: A's pairs moved A's feature only.
    assert _routed(routers, B).threshold == THRESHOLD
    moved = _routed(routers, A)
    assert (moved.threshold, moved.tier) == (ALL_FLAGSHIP, "flagship")
    with sessions() as s:
        move = repo.last_move(s, A, FEATURE)
        assert move is not None and (move.org, move.before, move.after) == (A, THRESHOLD, 1.0)
        assert repo.last_move(s, B, FEATURE) is None
        # Neither org's agreement is diluted by the other's pairs.
        assert repo.recent_agreement(s, A, FEATURE) == (0, 10)
        assert repo.recent_agreement(s, B, FEATURE) == (10, 10)
        entries = [e for e in audit.list_actions(s, action="routing.move")
                   if e.detail.get("feature") == FEATURE]
    assert [(e.target, e.detail["org"]) for e in entries] == [(f"{A}/{FEATURE}", A)]

    for i in range(10, 40):  # now B's cheap answers go wrong too: B moves on its own pairs
        _judge(rt, B, i, agree=False)
    assert _routed(routers, B).threshold == ALL_FLAGSHIP

    monkeypatch.setenv("SLUICE_DATABASE__URL", pg_url)
    shown = CliRunner().invoke(app, ["--json", "--url", pg_url, "--feature", FEATURE])
    assert shown.exit_code == 0, shown.output
    rows = {r["org"]: r for r in json.loads(shown.stdout)}
    assert (rows[A]["judged"], rows[A]["agree"]) == (10, 0)
    assert (rows[B]["judged"], rows[B]["agree"]) == (40, 10)
    only_b = CliRunner().invoke(app, ["--json", "--url", pg_url, "--org", B])
    assert {r["org"] for r in json.loads(only_b.stdout)} == {B}
    listed = CliRunner().invoke(app, ["moves", "--json", "--url", pg_url, "--org", A])
    assert [(m["org"], m["feature"]) for m in json.loads(listed.stdout)] == [(A, FEATURE)]

    # Which org's routing a revert changes is the operator's to say.
    ambiguous = CliRunner().invoke(app, ["revert", FEATURE, "--url", pg_url])
    assert ambiguous.exit_code == 2
    assert "exists in 2 orgs" in ambiguous.output and "--org" in ambiguous.output
    reverted = CliRunner().invoke(app, ["revert", FEATURE, "--org", A, "--reason", "test",
                                        "--url", pg_url])
    assert reverted.exit_code == 0, reverted.output
    assert _routed(routers, A).threshold == THRESHOLD
    assert _routed(routers, B).threshold == ALL_FLAGSHIP
    with sessions() as s:
        last = repo.last_move(s, A, FEATURE)
        assert last is not None and (last.direction, last.after) == ("revert", THRESHOLD)
        assert repo.last_move(s, B, FEATURE).direction == "flagship"


def test_the_floors_lock_is_per_org(settings: Any, sessions: Any) -> None:
    from scheduler.quality_floor import evaluate

    holder, other, same = sessions(), sessions(), sessions()
    try:
        evaluate(holder, settings, A, FEATURE)  # holds A's lock until its transaction ends
        for s in (other, same):
            s.execute(text("SET LOCAL lock_timeout = '500ms'"))
        evaluate(other, settings, B, FEATURE)  # B's feature is not held up by A's
        with pytest.raises(OperationalError, match="lock timeout"):
            evaluate(same, settings, A, FEATURE)
    finally:
        for s in (holder, other, same):
            s.rollback()
            s.close()
