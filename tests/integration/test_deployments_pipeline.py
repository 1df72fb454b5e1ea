"""Deployments through real workers: one model on Anthropic's API and on Bedrock (two stand-ins).

A deployment made to fail mid-run loses no request and bills none twice; a static prefix stays
on one deployment (its provider cache warm); a failing deployment is cooled down for every
worker and comes back when its cooldown lapses.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db.attempts import AttemptRow
from models.db.budgets import ReservationRow, get_budget, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.deployments import deployment_name, rank
from models.domain.errors import ProviderRetryable
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.usage import Usage
from queues.producer import connect
from tests.e2e.cli_support import sluice_json
from tests.services import run_token
from tests.worker_proc import celery_worker
from workers.deployment_health import DeploymentHealth
from workers.failover import prefix_key
from workers.providers.standin import StandIn, StandInConfig

pytestmark = pytest.mark.integration
MODEL = "claude-sonnet-4-6"
TEAM = f"deploy{run_token()}".replace("_", "")
COOLDOWN_S = 10
#: A model with two deployments and a fallback model (SLUICE_PROVIDERS__FALLBACKS below).
FALLING, FALLBACK = "claude-opus-4-7", "claude-haiku-4-5"
LONG_SYSTEM = "You answer questions about tea. " + " ".join(
    f"Rule {i}: cite the leaf grade." for i in range(300))


def prices(direct: str, bedrock: str) -> str:
    shipped = resources.files("models.data").joinpath("prices.toml").read_text("utf-8")
    return shipped + f'''
[deployments.claude-direct]
model = "{MODEL}"
transport = "anthropic"
base_url = "{direct}"
weight = 1

[deployments.claude-bedrock]
model = "{MODEL}"
transport = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
regional = true
weight = 3

[deployments.opus-direct]
model = "{FALLING}"
transport = "anthropic"
base_url = "{direct}"

[deployments.opus-bedrock]
model = "{FALLING}"
transport = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"

[deployments.haiku-direct]
model = "claude-haiku-4-5"
transport = "anthropic"
base_url = "{direct}"

[deployments.haiku-bedrock]
model = "claude-haiku-4-5"
transport = "bedrock"
base_url = "{bedrock}"
region = "us-east-1"
daily_budget_usd = "0.0001"
'''


@pytest.fixture(scope="module")
def deployed(integration_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    """Two stand-ins (the second one a Bedrock deployment), a real worker, a producer."""
    folder = tmp_path_factory.mktemp("deployments")
    path: Path = folder / "prices.toml"
    path.write_text(prices("http://127.0.0.1:1", "http://127.0.0.1:1"))  # ports come next
    with StandIn(StandInConfig(catalogue=load_catalogue(path))) as direct, \
            StandIn(StandInConfig(catalogue=load_catalogue(path))) as bedrock:
        path.write_text(prices(direct.anthropic_base_url, bedrock.url))
        prefix = f"sgdep{run_token()}:"
        env = {**integration_env, "SLUICE_PRICES_PATH": str(path),
               "SLUICE_BROKER__KEY_PREFIX": prefix, "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
               "SLUICE_TEST_KEY_PREFIX": prefix,
               "SLUICE_PROVIDERS__DEPLOYMENT_COOLDOWN_S": str(COOLDOWN_S),
               "SLUICE_PROVIDERS__FALLBACKS": json.dumps({FALLING: [FALLBACK]}),
               # Fake AWS credentials: the SDK signs, the stand-in accepts any signature.
               "AWS_ACCESS_KEY_ID": "AKIDSTANDIN", "AWS_SECRET_ACCESS_KEY": "standin"}
        with celery_worker(env, folder / "worker.log", queues="interactive.api,async.api",
                           name=f"deploy-{run_token()}"):
            gw = connect(load_settings(dict(env)))
            import redis

            client = redis.Redis.from_url(env["SLUICE_BROKER__URL"])
            yield {"gw": gw, "direct": direct, "bedrock": bedrock, "env": env,
                   "catalogue": load_catalogue(path),
                   "health": DeploymentHealth(client, prefix=prefix, cooldown_s=COOLDOWN_S)}
            client.close()
            gw.close()


@pytest.fixture(autouse=True)
def clean_standins(deployed: Any) -> None:
    """No fault a failed test scripted reaches the next one."""
    deployed["direct"].reset()
    deployed["bedrock"].reset()


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=4)
    yield session_factory(engine)
    engine.dispose()


def ask(feature: str, text: str, **kw: Any) -> dict[str, Any]:
    return {"request_id": f"dep-{uuid.uuid4().hex}", "team": TEAM, "feature": feature,
            "model": MODEL, "max_tokens": 40, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": text}], **kw}


def rows(sessions: Any, ids: list[str]) -> dict[str, LedgerRow]:
    with sessions() as s:
        found = s.scalars(select(LedgerRow).where(LedgerRow.request_id.in_(ids))).all()
        return {r.request_id: r for r in found}


def attempts_of(sessions: Any, ids: list[str]) -> dict[str, list[AttemptRow]]:
    out: dict[str, list[AttemptRow]] = {i: [] for i in ids}
    with sessions() as s:
        for a in s.scalars(select(AttemptRow).where(AttemptRow.request_id.in_(ids))
                           .order_by(AttemptRow.id)):
            out[a.request_id].append(a)
    return out


def served(standin: Any) -> int:
    return sum(n for p, n in standin.stats()["by_path"].items() if "invoke" in p
               or p == "/v1/messages")


def ok_answers(standin: Any) -> int:
    return int(standin.stats()["by_status"].get("200", 0))


def test_a_deployment_failing_mid_run_loses_no_request_and_bills_none_twice(
        deployed: Any, sessions: Any) -> None:
    gw, direct, bedrock = deployed["gw"], deployed["direct"], deployed["bedrock"]
    direct.reset(), bedrock.reset()
    feature = f"fail-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=Decimal("5"))
        s.commit()
    gw.admission.invalidate()
    requests = [ask(feature, f"Tell me about tea number {i}") for i in range(40)]
    done = threading.Semaphore(0)
    faulted = threading.Event()

    def run(d: dict[str, Any]) -> Any:
        try:
            return gw.complete(d, timeout=60)
        finally:
            done.release()

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(run, d) for d in requests]
        for _ in range(12):
            done.acquire()
        # Mid-run: Bedrock starts refusing everything (an outage), with calls in flight.
        bedrock.script_faults(["503"] * 500, path="bedrock")
        faulted.set()
        results = [f.result() for f in futures]  # none raises: every request is answered
    ids = [d["request_id"] for d in requests]
    assert {r.model for r in results} == {MODEL}
    ledger, tries = rows(sessions, ids), attempts_of(sessions, ids)
    by_deployment = Counter(r.deployment for r in ledger.values())
    assert set(by_deployment) == {"claude-direct", "claude-bedrock"}  # both served
    assert bedrock.stats()["by_status"].get("503", 0) > 0  # the outage was hit
    # Exactly one answer bought per request, across both deployments: none paid twice.
    assert ok_answers(direct) + ok_answers(bedrock) == 40
    variants = {deployment_name(v): v for v in deployed["catalogue"].get(MODEL).variants}
    for rid, row in ledger.items():
        assert row.outcome == "ok"
        oks = [a for a in tries[rid] if a.outcome == "ok"]
        assert len(oks) == 1 and oks[0].deployment == row.deployment
        # The failed ones: Bedrock's refusals, not billed; a failover is a fallback attempt.
        for a in tries[rid]:
            if a.outcome != "ok":
                assert (a.deployment, a.outcome, a.billing, a.cost) == (
                    "claude-bedrock", "refused", "none", 0)
        if len(tries[rid]) > 1:
            assert tries[rid][-1].kind == "fallback" and row.deployment == "claude-direct"
        assert row.cost == sum(a.cost for a in tries[rid])
        # Priced by the platform that answered (Bedrock's regional endpoint: 10 % more).
        usage = Usage(input_uncached=row.input_uncached, cache_read=row.cache_read,
                      cache_write_5m=row.cache_write_5m, cache_write_1h=row.cache_write_1h,
                      output=row.output)
        assert row.cost == cost_of(usage, variants[row.deployment])
    # The budget was charged each request's cost once and holds nothing back.
    with sessions() as s:
        b = get_budget(s, "feature", feature, "total")
        assert b is not None and b.spent == sum(r.cost for r in ledger.values())
        assert b.reserved == 0
    # Cooled down for every worker: the next requests go to the direct deployment alone.
    health = deployed["health"]
    assert health.cooling(["claude-direct", "claude-bedrock"]) == {"claude-bedrock"}
    before = served(bedrock)
    after = [gw.complete(ask(feature, f"After the outage {i}"), timeout=60) for i in range(5)]
    assert {r.deployment for r in after} == {"claude-direct"}
    assert served(bedrock) == before and health.cooling(["claude-bedrock"]) == {"claude-bedrock"}

    # Recovery: the outage ends; once the cooldown lapses, Bedrock takes its prefixes back.
    bedrock.reset()
    deadline = time.time() + COOLDOWN_S + 30
    while health.cooling(["claude-bedrock"]):
        assert time.time() < deadline, "the cooldown never lapsed"
        time.sleep(0.2)
    model = deployed["catalogue"].get(MODEL)
    theirs = []
    for i in range(200):
        d = ask(feature, "Which tea?", static={"system": f"Tea shop {i}. Be brief."})
        if deployment_name(rank(model.variants, prefix_key(parse_request(d)))[0]) \
                == "claude-bedrock":
            theirs.append(d)
        if len(theirs) == 3:
            break
    back = [gw.complete(d, timeout=60) for d in theirs]
    assert [r.deployment for r in back] == ["claude-bedrock"] * 3


def test_weights_hold_within_5_percent_over_1000_requests_and_each_prefix_sticks(
        deployed: Any, sessions: Any) -> None:
    """1,000 requests with 250 static prefixes, four each: every prefix is answered by one
    deployment, and the shares are the weights' (1 : 3) within 5 points."""
    gw = deployed["gw"]
    feature = f"weights-{uuid.uuid4().hex[:8]}"
    asks = [ask(feature, f"Question {n}", static={"system": f"Shop {uuid_of(i)}. Be brief."})
            for n in range(4) for i in range(250)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda d: gw.complete(d, timeout=120), asks))
    by_prefix: dict[str, set[str]] = {}
    for d, r in zip(asks, results):
        by_prefix.setdefault(d["static"]["system"], set()).add(r.deployment)
    assert len(by_prefix) == 250 and all(len(v) == 1 for v in by_prefix.values())
    shares = Counter(r.deployment for r in results)
    assert abs(shares["claude-bedrock"] / 1000 - 0.75) <= 0.05, shares
    assert abs(shares["claude-direct"] / 1000 - 0.25) <= 0.05, shares
    ledger = rows(sessions, [d["request_id"] for d in asks])
    assert Counter(r.deployment for r in ledger.values()) == shares


def uuid_of(i: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"shop-{i}").hex[:12]


def test_a_static_prefix_stays_on_one_deployment_and_its_cache_stays_warm(
        deployed: Any, sessions: Any) -> None:
    gw = deployed["gw"]
    feature = f"sticky-{uuid.uuid4().hex[:8]}"
    results = [gw.complete(ask(feature, f"Question {i} about oolong",
                               static={"system": LONG_SYSTEM}), timeout=60) for i in range(6)]
    assert len({r.deployment for r in results}) == 1
    # Every one after the first read the prefix its deployment's cache already held.
    assert results[0].usage.cache_write_5m > 0
    assert all(r.usage.cache_read > 1000 for r in results[1:])
    # And the ledger says where each one went.
    ledger = rows(sessions, [r.request_id for r in results])
    assert {row.deployment for row in ledger.values()} == {results[0].deployment}


def test_spend_by_deployment_adds_up_to_the_ledger(deployed: Any, sessions: Any) -> None:
    gw = deployed["gw"]
    for i in range(4):
        gw.complete(ask("spend", f"Spend question {i}"), timeout=60)
    out = sluice_json(["spend", "--by", "deployment", "--team", TEAM], deployed["env"])
    with sessions() as s:
        mine = s.scalars(select(LedgerRow).where(LedgerRow.team == TEAM)).all()
    want: dict[str, Decimal] = {}
    for row in mine:
        want[row.deployment] = want.get(row.deployment, Decimal(0)) + row.cost
    assert {line["deployment"]: Decimal(line["cost"]) for line in out["lines"]} == want
    assert {"claude-direct", "claude-bedrock"} <= set(want)


def test_a_failover_to_a_dearer_deployment_stays_inside_the_reservation(
        deployed: Any, sessions: Any) -> None:
    """Room for one worst case on Bedrock's regional price and a little: the direct deployment
    fails, Bedrock answers, and the spend never passes the limit (last: it cools direct)."""
    gw, direct, cat = deployed["gw"], deployed["direct"], deployed["catalogue"]
    model = cat.get(MODEL)
    feature = f"cover-{uuid.uuid4().hex[:8]}"
    d = next(x for x in (ask(feature, "Which tea?", static={"system": f"Tea room {i}."})
                         for i in range(200))
             if deployment_name(rank(model.variants, prefix_key(parse_request(x)))[0])
             == "claude-direct")
    from models.domain.cost import worst_case_cost
    from models.domain.tokens import prompt_count

    req = parse_request(d)
    bedrock = next(v for v in model.variants if deployment_name(v) == "claude-bedrock")
    hard = worst_case_cost(prompt_count(req), req.max_tokens, bedrock) * Decimal("1.2")
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=hard)
        s.commit()
    gw.admission.invalidate()
    direct.script_faults(["500"], path="anthropic")
    result = gw.complete(d, timeout=60)
    assert result.deployment == "claude-bedrock"
    tries = attempts_of(sessions, [d["request_id"]])[d["request_id"]]
    assert [(a.deployment, a.kind, a.outcome) for a in tries] == [
        ("claude-direct", "call", "refused"), ("claude-bedrock", "fallback", "ok")]
    with sessions() as s:
        b = get_budget(s, "feature", feature, "total")
        assert b is not None and b.spent == result.cost <= hard and b.reserved == 0


def test_a_request_every_deployment_refused_names_the_last_one_tried(
        deployed: Any, sessions: Any) -> None:
    gw, direct, bedrock = deployed["gw"], deployed["direct"], deployed["bedrock"]
    d = ask(f"down-{uuid.uuid4().hex[:8]}", "Anyone there?")
    direct.script_faults(["500"] * 4)
    bedrock.script_faults(["500"] * 4)
    try:
        with pytest.raises(ProviderRetryable) as err:
            gw.complete(d, timeout=60)
    finally:
        direct.reset(), bedrock.reset()
    assert "gave up" in err.value.message
    tries = attempts_of(sessions, [d["request_id"]])[d["request_id"]]
    # One attempt on the first deployment, the full policy on the last, none billed.
    assert len({a.deployment for a in tries}) == 2 and len(tries) == 4
    assert [a.deployment for a in tries[1:]] == [tries[-1].deployment] * 3
    assert {(a.outcome, a.cost) for a in tries} == {("refused", 0)}
    row = rows(sessions, [d["request_id"]])[d["request_id"]]
    assert (row.outcome, row.deployment, row.cost) == ("error", tries[-1].deployment, 0)


def test_a_deployment_past_its_own_budget_leaves_routing_and_requests_still_succeed(
        deployed: Any, sessions: Any) -> None:
    """haiku-bedrock may spend $0.0001 a day: one answer spends it; the requests whose
    prefixes it would take go to haiku-direct from then on, none of them failing."""
    gw, cat = deployed["gw"], deployed["catalogue"]
    model = cat.get("claude-haiku-4-5")
    feature = f"own-{uuid.uuid4().hex[:8]}"
    theirs = [d for d in (ask(feature, "Which tea?", model="claude-haiku-4-5",
                              static={"system": f"Haiku shop {i}."}) for i in range(200))
              if deployment_name(rank(model.variants, prefix_key(parse_request(d)))[0])
              == "haiku-bedrock"][:4]
    assert len(theirs) == 4
    results = [gw.complete(d, timeout=60) for d in theirs]
    assert [r.deployment for r in results] == ["haiku-bedrock"] + ["haiku-direct"] * 3
    assert results[0].cost > Decimal("0.0001")
    tries = attempts_of(sessions, [d["request_id"] for d in theirs])
    # Never sent to the spent deployment again, so nothing failed or was refused.
    assert all([a.deployment for a in tries[d["request_id"]]] == [r.deployment]
               for d, r in zip(theirs, results))


def test_every_deployment_of_a_model_is_tried_before_its_fallback_model_inside_the_reservation(
        deployed: Any, sessions: Any) -> None:
    """Both deployments of the primary refuse: the attempts go deployment A (one try, another
    deployment follows), deployment B (the full retry policy: the last deployment), and only
    then the fallback model, which answers; every attempt was admitted inside the request's
    one reservation, and the budget is charged what was spent and nothing more."""
    gw, direct, bedrock, cat = (deployed["gw"], deployed["direct"], deployed["bedrock"],
                                deployed["catalogue"])
    primary, fallback = cat.get(FALLING), cat.get(FALLBACK)
    feature = f"cross-{uuid.uuid4().hex[:8]}"
    # A prefix whose fallback lands on haiku-direct (no budget of its own: the test of
    # haiku-bedrock's own budget is left alone whichever order they run in).
    d = next(x for x in (ask(feature, "Which tea?", model=FALLING,
                             static={"system": f"Opus tea room {i}."}) for i in range(200))
             if deployment_name(rank(fallback.variants, prefix_key(parse_request(x)))[0])
             == "haiku-direct")
    first, second = (deployment_name(v) for v in rank(primary.variants,
                                                      prefix_key(parse_request(d))))
    from models.domain.cost import worst_case_cost
    from models.domain.tokens import prompt_count

    req = parse_request(d)
    # Room for exactly the reservation (the dearest attempt the chain can reach) and no more.
    hard = max(worst_case_cost(prompt_count(req), req.max_tokens, v)
               for m in (primary, fallback) for v in m.variants)
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=hard)
        s.commit()
    gw.admission.invalidate()
    direct.script_faults(["500"] * 3, model=FALLING)
    bedrock.script_faults(["500"] * 3, model=FALLING)
    try:
        result = gw.complete(d, timeout=60)
    finally:
        direct.reset(), bedrock.reset()
    assert (result.model, result.deployment) == (FALLBACK, "haiku-direct")
    assert "fallback to claude-haiku-4-5" in result.route.reason
    tries = attempts_of(sessions, [d["request_id"]])[d["request_id"]]
    assert [(a.model, a.deployment, a.kind, a.outcome) for a in tries] == [
        (FALLING, first, "call", "refused"),
        (FALLING, second, "fallback", "refused"),
        (FALLING, second, "retry", "refused"),
        (FALLING, second, "retry", "refused"),
        (FALLBACK, "haiku-direct", "fallback", "ok")]
    assert [a.cost for a in tries[:-1]] == [0] * 4 and tries[-1].cost == result.cost > 0
    # One reservation held for the whole chain: each attempt was admitted inside it (what
    # was spent before it plus its own worst case), and it settled at what was spent.
    with sessions() as s:
        held = s.scalars(select(ReservationRow)
                         .where(ReservationRow.request_id == d["request_id"])).all()
        b = get_budget(s, "feature", feature, "total")
    assert len(held) == 1 and held[0].state == "settled" and held[0].amount == hard
    assert held[0].actual == result.cost
    spent = Decimal(0)
    for a in tries:
        assert spent + a.worst_case <= held[0].amount
        spent += a.cost
    assert b is not None and b.spent == result.cost <= hard and b.reserved == 0
    row = rows(sessions, [d["request_id"]])[d["request_id"]]
    assert (row.outcome, row.model, row.deployment, row.cost) == (
        "ok", FALLBACK, "haiku-direct", result.cost)
