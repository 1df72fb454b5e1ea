"""The quality guard end to end on real workers: shadows on the async lane under their own
budget, judged pairs, and the floor moving a feature whose cheap answers are wrong."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import audit, spend
from models.db import quality as repo
from models.db.budgets import get_budget
from models.db.tables import JudgementRow, LedgerRow
from models.domain.errors import ValidationError
from models.domain.quality import PURPOSE_TAG, shadow_budget_key
from tests.quality_support import WORKER_LOG, ask, judged, wait_for
from tests.services import run_token

pytestmark = pytest.mark.integration
TOKEN = run_token()
WRONG = f"sentiment-{TOKEN}"  # the cheap model answers this feature's prompts wrongly
RIGHT = f"tagging-{TOKEN}"  # both tiers answer alike
PRICEY = f"pricey-{TOKEN}"  # a shadow budget with room for a few shadows only
PRICEY_BUDGET = Decimal("0.001")
JUDGED = f"faq-{TOKEN}"  # an LLM judge; its shadows and judge calls go through the Batch API
# The advisor's replays: near-repeats (and the twin feature with the rule applied), a short
# prefix, and a flagship feature whose cheap shadows all agree. All keep their text.
NORM, NORMED = f"orders-{TOKEN}", f"orders-normed-{TOKEN}"
PAD = f"short-prefix-{TOKEN}"
SHARE = f"share-{TOKEN}"


def _guard(**kw: Any) -> dict[str, Any]:
    return {"shadow_cheap": 1.0, "shadow_flagship": 1.0, "judge": "exact", "floor": 0.6,
            "release": 0.95, "min_pairs": 8, "step": 1.0, "shadow_budget_usd": "0.05", **kw}


@pytest.fixture(scope="module")
def quality_env(integration_env: dict[str, str]) -> dict[str, str]:
    """The session's services, queues of its own, and three guarded features."""
    features = {WRONG: _guard(), RIGHT: _guard(),
                PRICEY: _guard(floor=None, shadow_budget_usd=str(PRICEY_BUDGET)),
                JUDGED: _guard(floor=None, judge="llm", shadow_flagship=0.0),
                SHARE: _guard(floor=None, shadow_cheap=0.0)}
    policies = [{"feature": f, "threshold": 0.0} for f in (WRONG, RIGHT, PRICEY, JUDGED)]
    policies.append({"feature": SHARE, "threshold": 1.0})  # every request to the flagship
    return {**integration_env, "SLUICE_BROKER__KEY_PREFIX": f"sgq{TOKEN}:",
            "SLUICE_BATCH__FEATURES": json.dumps([JUDGED]),
            "SLUICE_BATCH__POLL_INTERVAL_S": "0.05",
            "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "100",
            "SLUICE_QUALITY__FEATURES": json.dumps(features),
            "SLUICE_PRIVACY__STORE_TEXT_FEATURES": json.dumps(
                ["responses-kept", NORM, NORMED, PAD, SHARE]),
            "SLUICE_CACHE__FEATURES": json.dumps({NORMED: {"patterns": ["order_id", "date"]}}),
            "SLUICE_ROUTING__POLICIES": json.dumps(policies)}


@pytest.fixture(scope="module")
def quality_gateway(quality_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    from tests.worker_proc import worker_gateway

    log = tmp_path_factory.mktemp("quality") / "worker.log"
    WORKER_LOG.append(log)
    with worker_gateway(quality_env, log, name=f"quality-{TOKEN}") as gw:
        yield gw


def test_wrong_cheap_answers_move_their_feature_to_the_flagship_and_the_other_stays(
        quality_gateway: Any, sessions: Any) -> None:
    gw = quality_gateway
    for i in range(10):
        served = ask(gw, WRONG, f"Classify the sentiment of review {i}: "
                                "[[answer: positive; gpt-4o-mini: negative]]")
        # Each answer is its tier's; the floor may move the feature before the loop ends.
        assert (served.route.tier, served.text) in {("cheap", "negative"),
                                                    ("flagship", "positive")}
        assert i > 0 or served.route.tier == "cheap"
        same = ask(gw, RIGHT, f"Label the aisle of item {i}: [[answer: kitchen]]")
        assert (same.route.tier, same.text) == ("cheap", "kitchen")
    wait_for(lambda: judged(sessions, WRONG) >= 8 and judged(sessions, RIGHT) >= 8)
    with sessions() as s:
        lines = {(q.feature, q.tier): q for q in repo.quality_lines(s, org="default")}
        move = wait_for(lambda: repo.last_move(s, "default", WRONG))
        assert repo.last_move(s, "default", RIGHT) is None
        entries = [e for e in audit.list_actions(s, action="routing.move")
                   if e.target == f"default/{WRONG}"]
        shadows = s.execute(select(LedgerRow.lane, LedgerRow.model, LedgerRow.tier).where(
            LedgerRow.feature == WRONG, LedgerRow.purpose == "shadow")).all()
    assert lines[(WRONG, "cheap")].agree == 0 and lines[(RIGHT, "cheap")].agree >= 8
    assert (move.direction, move.before, move.after) == ("flagship", 0.0, 1.0)
    assert entries and entries[0].detail["after"] == 1.0
    # Shadows answered on the async lane by the other tier: the flagship for cheap answers, and
    # the cheap model for flagship ones once the move lands inside the loop (a race with the
    # judging, so either may come first).
    assert shadows and ("async", "gpt-4o") in {(lane, model) for lane, model, _ in shadows}
    assert {(lane, model) for lane, model, _ in shadows} <= {("async", "gpt-4o"),
                                                             ("async", "gpt-4o-mini")}
    # The producer picks the move up (its move book re-reads every 2 s).
    moved = wait_for(lambda: (lambda r: r if r.route.tier == "flagship" else None)(
        ask(gw, WRONG, "Classify the sentiment of review 99: [[answer: positive]]")), 30)
    assert moved.text == "positive"
    assert ask(gw, RIGHT, "Label the aisle of item 99: [[answer: kitchen]]").route.tier == "cheap"


def test_shadow_spend_stays_within_its_budget_and_is_never_savings(
        quality_gateway: Any, sessions: Any) -> None:
    gw = quality_gateway
    for i in range(12):
        ask(gw, PRICEY, f"Describe item {i} of the catalogue in a few words please")
    time.sleep(3)  # let queued shadows finish
    with sessions() as s:
        wait_for(lambda: s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.feature == PRICEY, LedgerRow.purpose == "shadow",
            LedgerRow.outcome == "running")) == 0, 30)
        spent = s.scalar(select(func.coalesce(func.sum(LedgerRow.cost), 0)).where(
            LedgerRow.feature == PRICEY, LedgerRow.purpose == "shadow"))
        shadows = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.feature == PRICEY, LedgerRow.purpose == "shadow"))
        budget = get_budget(s, "feature", shadow_budget_key(PRICEY), "daily")
        by_purpose = {line.key: line for line in spend.spend_lines(s, "purpose")}
    assert budget is not None and budget.hard_limit == PRICEY_BUDGET
    assert 0 < shadows < 12, "the budget let some shadows through and refused the rest"
    assert Decimal(spent) <= PRICEY_BUDGET and budget.spent <= PRICEY_BUDGET
    shadow = by_purpose[("shadow",)]
    assert shadow.cost > 0 and shadow.saved == 0 and shadow.saved_by_routing == 0


def test_feedback_joins_the_request_and_callers_cannot_claim_a_purpose(
        quality_gateway: Any, sessions: Any) -> None:
    gw = quality_gateway
    served = ask(gw, RIGHT, "Label the aisle of item 7: [[answer: kitchen]]")
    assert gw.feedback({"team": "catalog", "request_id": served.request_id, "thumb": -1})
    assert gw.feedback({"team": "catalog", "request_id": served.request_id,
                        "metric": "clicked", "value": 1.0})
    with sessions() as s:
        counts = repo.feedback_counts(s)
    assert counts[("default", RIGHT, "cheap")][1] >= 1
    with pytest.raises(ValidationError, match="no answered request"):
        gw.feedback({"team": "other-team", "request_id": served.request_id, "thumb": 1})
    with pytest.raises(ValidationError, match="sluice.purpose"):
        gw.submit({"team": "catalog", "feature": RIGHT, "tags": {PURPOSE_TAG: "shadow"},
                   "messages": [{"role": "user", "content": "hi"}]})


def test_quality_table_prometheus_and_revert(quality_gateway: Any, sessions: Any,
                                             pg_url: str, quality_env: dict[str, str],
                                             monkeypatch: Any) -> None:
    from prometheus_client import generate_latest
    from typer.testing import CliRunner

    from ops.cli.quality import quality_app as app
    from ops.metrics import build_registry

    for name, value in quality_env.items():
        monkeypatch.setenv(name, value)
    wait_for(lambda: judged(sessions, WRONG) >= 8)
    out = CliRunner().invoke(app, ["--json", "--url", pg_url])
    assert out.exit_code == 0, out.output
    rows = {(r["feature"], r["tier"]): r for r in json.loads(out.stdout)
            if r["org"] == "default"}
    wrong = rows[(WRONG, "cheap")]
    assert wrong["agreement"] < 0.5 and wrong["low"] < 0.6 == wrong["floor"]
    assert rows[(RIGHT, "cheap")]["low"] >= 0.6
    assert Decimal(wrong["saved_on_disagreement"]) > 0
    text = generate_latest(build_registry(sessions)).decode()
    from prometheus_client.parser import text_string_to_metric_families

    lows = [x.labels for f in text_string_to_metric_families(text)
            if f.name == "sluice_quality_agreement_lower_bound" for x in f.samples]
    assert {"org": "default", "feature": RIGHT, "tier": "cheap"} in lows
    reverted = CliRunner().invoke(app, ["revert", WRONG, "--reason", "test",
                                        "--url", pg_url])
    assert reverted.exit_code == 0, reverted.output
    with sessions() as s:
        last = repo.last_move(s, "default", WRONG)
        assert last is not None and (last.direction, last.after) == ("revert", 0.0)
        assert [e for e in audit.list_actions(s, action="routing.revert")
                if e.target == f"default/{WRONG}"]
    back = wait_for(lambda: (lambda r: r if r.route.tier == "cheap" else None)(
        ask(quality_gateway, WRONG, "Classify review 100: [[answer: positive]]")), 30)
    assert back.route.tier == "cheap"


def test_llm_judge_votes_in_both_orders_through_the_batch_api(
        quality_gateway: Any, sessions: Any) -> None:
    gw = quality_gateway
    same = [ask(gw, JUDGED, f"Which aisle is item {i} in? [[answer: kitchen and dining]]")
            for i in range(2)]
    wrong = ask(gw, JUDGED, "What colour is the kettle? [[answer: the kettle is blue; "
                            "gpt-4o-mini: bananas are rich in potassium]]")
    ids = [r.request_id for r in (*same, wrong)]
    wait_for(lambda: judged(sessions, JUDGED) >= 3, 120)
    with sessions() as s:
        rows = {j.request_id: j for j in s.scalars(select(JudgementRow).where(
            JudgementRow.feature == JUDGED))}
        spent = s.execute(select(LedgerRow.purpose, LedgerRow.batch, LedgerRow.model).where(
            LedgerRow.feature == JUDGED, LedgerRow.purpose != "serve")).all()
    assert [rows[i].agree for i in ids] == [True, True, False]
    assert all(rows[i].vote_first is not None and rows[i].vote_second is not None for i in ids)
    assert all(rows[i].judge == "llm" and rows[i].judge_cost > 0 for i in ids)
    assert sorted(p for p, _, _ in spent) == ["judge"] * 6 + ["shadow"] * 3
    # Shadows and judge calls went through the provider Batch API (50 % off), on the async lane.
    assert all(batch for _, batch, _ in spent)
    assert {m for p, _, m in spent if p == "judge"} == {"gpt-4o-mini"}


def test_advisor_batch_estimate_matches_a_replay_with_the_lever_applied(
        quality_gateway: Any, sessions: Any) -> None:
    from datetime import datetime, timezone

    from models.domain.catalogue import load_catalogue
    from ops.advise import advise

    feature = f"adv-{TOKEN}"
    started = datetime.now(timezone.utc)
    prompts = [f"Write a short description of product {i} for the catalogue" for i in range(8)]

    def send(batch: bool) -> Decimal:
        handles = [quality_gateway.submit({
            "team": "catalog", "feature": feature, "lane": "async", "model": "cheap",
            "max_tokens": 60, "cache": {"mode": "bypass"},
            "tags": {"batch": "true" if batch else "false"},
            "messages": [{"role": "user", "content": p}]}) for p in prompts]
        return sum((h.result(timeout=120).cost for h in handles), Decimal(0))

    paid = send(batch=False)
    with sessions() as s:
        lines = [a for a in advise(s, load_catalogue(), since=started, feature=feature)
                 if a.lever == "batch-api"]
    assert lines, "async traffic off the Batch API must be advised"
    replayed = send(batch=True)  # the same trace with the lever applied
    actual = paid - replayed
    assert actual > 0
    assert abs(lines[0].window_saving - actual) <= Decimal("0.10") * actual


def test_advisor_top_line_on_the_shipped_trace_is_the_lever_the_replay_shows_worth_most(
        quality_gateway: Any, sessions: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone
    from pathlib import Path

    from models.domain.catalogue import load_catalogue
    from ops.advise import advise
    from ops.replay.trace import load_trace

    root = Path(__file__).resolve().parents[2]
    trace = load_trace(root / "ops/traces/product_descriptions.jsonl")
    salt = uuid.uuid4().hex[:8]

    def run(items: list[tuple[int, dict[str, Any]]], shape: Any) -> dict[int, Any]:
        def one(item: tuple[int, dict[str, Any]]) -> tuple[int, Any]:
            i, data = item
            req = {"cache": {"mode": "bypass"}, **shape(i, data),
                   "request_id": f"tr-{salt}-{uuid.uuid4().hex[:12]}"}
            return i, quality_gateway.submit(req).result(timeout=300)
        with ThreadPoolExecutor(16) as pool:
            return dict(pool.map(one, items))

    started = datetime.now(timezone.utc)
    first = run(list(enumerate(trace)), lambda i, d: {**d, "tags": {"batch": "false"}})
    with sessions() as s:
        lines = [a for a in advise(s, load_catalogue(), since=started)
                 if a.feature in {d["feature"] for d in trace}]
    assert len(lines) >= 2, lines

    def realized(advice: Any) -> Decimal:
        mine = [(i, d) for i, d in enumerate(trace) if d["feature"] == advice.feature]
        tier = load_catalogue().get(advice.model).tier if advice.model else ""

        def shape(i: int, d: dict[str, Any]) -> dict[str, Any]:
            if advice.lever == "batch-api":
                return {**d, "tags": {"batch": "true"}}
            if advice.lever == "response-cache":  # nothing stored yet: run one bypassed it
                return {**d, "tags": {"batch": "false"}, "cache": {"mode": "use"}}
            routed = first[i].route.tier
            return {**d, "tags": {"batch": "false"},
                    "model": advice.model if routed == tier else routed}

        if advice.lever not in ("batch-api", "model-price", "response-cache"):
            pytest.fail(f"no replay for lever {advice.lever}")
        after = run(mine, shape)
        return sum((first[i].cost - after[i].cost for i, _ in mine), Decimal(0))

    top, second = lines[0], lines[1]
    saved = {0: realized(top), 1: realized(second)}
    assert saved[0] >= saved[1], (top, second, saved)
    for k, advice in ((0, top), (1, second)):
        if advice.lever in ("batch-api", "response-cache"):  # same tokens: within 10 %
            assert abs(advice.window_saving - saved[k]) <= Decimal("0.10") * saved[k]


def _advice(sessions: Any, since: Any, feature: str, lever: str) -> Any:
    from models.domain.catalogue import load_catalogue
    from ops.advise import advise

    with sessions() as s:
        lines = [a for a in advise(s, load_catalogue(), since=since, feature=feature)
                 if a.lever == lever]
    assert len(lines) == 1, f"expected one {lever} line for {feature}: {lines}"
    return lines[0]


def _within(estimate: Decimal, actual: Decimal) -> None:
    assert actual > 0
    assert abs(estimate - actual) <= Decimal("0.10") * actual, (estimate, actual)


def test_advisor_normalization_estimate_matches_a_replay_with_the_rule_applied(
        quality_gateway: Any, sessions: Any) -> None:
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc)
    trace = [f"Where is my order {1000 + i}-X{TOKEN[:4]}? I placed it on 2026-11-{10 + i:02d} "
             "and it has not arrived; what are my options?" for i in range(8)]

    def send(feature: str) -> Decimal:
        # One at a time, as a trace replays: each answer is stored before the next asks.
        return sum((quality_gateway.complete({
            "team": "catalog", "feature": feature, "max_tokens": 40, "model": "cheap",
            "messages": [{"role": "user", "content": p}]}, timeout=60).cost for p in trace),
            Decimal(0))

    paid = send(NORM)
    advice = _advice(sessions, started, NORM, "normalize")
    assert '"patterns": ["order_id", "date"]' in advice.action
    replayed = send(NORMED)  # the same trace under the rule the advice names
    _within(advice.window_saving, paid - replayed)


def test_advisor_short_prefix_estimate_matches_a_replay_with_the_prefix_padded(
        quality_gateway: Any, sessions: Any) -> None:
    from datetime import datetime, timezone

    from models.domain.tokens import count_text
    from ops.advise_text import PAD_MARGIN

    started = datetime.now(timezone.utc)
    rules = f"[{TOKEN}] " + " ".join(f"Rule {i}: keep sentences short and concrete."
                                     for i in range(90))
    filler = " ".join(f"Reference note {i}: the catalogue lists sizes in centimetres."
                      for i in range(60))
    padded = rules
    for word in filler.split(" "):
        if count_text(padded) >= 1024 + PAD_MARGIN:
            break
        padded += " " + word
    assert 700 < count_text(rules) < 1024 <= count_text(padded) - PAD_MARGIN + 8

    def send(system: str) -> Decimal:
        return sum((quality_gateway.complete({
            "team": "catalog", "feature": PAD, "max_tokens": 8, "model": "gpt-4.1",
            "cache": {"mode": "bypass"}, "static": {"system": system},
            "messages": [{"role": "user", "content": f"Describe item {i}."}]},
            timeout=60).cost for i in range(8)), Decimal(0))

    paid = send(rules)
    advice = _advice(sessions, started, PAD, "pad-prefix")
    replayed = send(padded)  # the same trace with the prefix grown past the minimum
    _within(advice.window_saving, paid - replayed)


def test_advisor_flagship_share_estimate_matches_a_replay_with_the_share_moved(
        quality_gateway: Any, sessions: Any) -> None:
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc)
    # Both tiers give the scripted answer: every pair agrees.
    trace = [f"Summarise the return policy for order batch {i} in one line: "
             "[[answer: thirty days]]" for i in range(40)]

    def send(model: Any) -> list[Any]:
        handles = [quality_gateway.submit({
            "team": "catalog", "feature": SHARE, "max_tokens": 24, "model": model(i),
            "cache": {"mode": "bypass"}, "messages": [{"role": "user", "content": p}]})
            for i, p in enumerate(trace)]
        return [h.result(timeout=120) for h in handles]

    served = send(lambda i: "auto")
    assert {r.route.tier for r in served} == {"flagship"}
    # 40 shadows queue on the async lane behind whatever earlier tests left there: on a
    # loaded machine (the whole suite on two cores) that took longer than two minutes.
    wait_for(lambda: judged(sessions, SHARE) >= len(trace), timeout=200)
    advice = _advice(sessions, started, SHARE, "flagship-share")
    # The lever applied: the share the advice moves (its lower bound) answered by the cheap tier.
    lo = float(advice.action.split("lower bound ")[1].split("%")[0]) / 100
    moved = round(lo * len(trace))
    replayed = send(lambda i: "cheap" if i < moved else "flagship")
    actual = sum((a.cost for a in served), Decimal(0)) - sum((b.cost for b in replayed),
                                                             Decimal(0))
    _within(advice.window_saving, actual)
