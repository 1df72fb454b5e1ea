"""The brief's coding assistant through the real pipeline: a feature ladder routes
autocomplete to Claude Haiku, explanations to GPT-4o-mini and multi-file edits to Claude
Sonnet by task type (producer → Redis → the session's Celery worker → the official SDKs on the
stand-in → PostgreSQL), the ledger records task type and rung, and spend groups by them."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from models.db import ledger, spend
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from ops.replay.trace import load_trace
from ops.traces.make_coding_trace import CODING_LADDER, OUT

pytestmark = pytest.mark.integration
EXPECTED = {"autocomplete": "claude-haiku-4-5", "explain": "gpt-4o-mini",
            "multi-file-edit": "claude-sonnet-4-6"}


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def ladder_env(integration_env: dict[str, str], tmp_path_factory: Any) -> dict[str, str]:
    """The session's services under a key prefix of this module's, with the coding ladder in
    a ladders file that producer and worker both read (as a deployment would)."""
    from models.domain.settings import load_settings
    from scheduler.router.ladder import ladder_from_dict
    from scheduler.router.ladder_book import write_ladders

    path = tmp_path_factory.mktemp("ladders") / "ladders.json"
    write_ladders(path, {"coding": ladder_from_dict("coding", CODING_LADDER)})
    prefix = f"sglad{uuid.uuid4().hex[:6]}:"
    env = {**integration_env, "SLUICE_BROKER__KEY_PREFIX": prefix,
           "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:", "SLUICE_ROUTING__LADDERS_PATH": str(path)}
    assert load_settings(dict(env)).routing.ladders_path == path
    return env


@pytest.fixture(scope="module")
def coding_gateway(ladder_env: dict[str, str], tmp_path_factory: Any) -> Any:
    """A producer and a real Celery worker of this module's, both with the ladders file."""
    from models.domain.settings import load_settings
    from queues.producer import connect
    from tests.worker_proc import celery_worker

    log = tmp_path_factory.mktemp("ladder-worker") / "worker.log"
    with celery_worker(ladder_env, log, queues="interactive.api,async.api",
                       name=f"test-ladders-{uuid.uuid4().hex[:6]}"):
        gw = connect(load_settings(dict(ladder_env)))
        yield gw
        gw.close()


def _ask(kind: str, tag: str) -> dict[str, Any]:
    data = next(d for d in load_trace(OUT) if d["tags"]["label"] == kind
                and "task_type" not in d["tags"])
    messages = [{"role": "user", "content": f"{data['messages'][0]['content']}\n# {tag}"}]
    return dict(data, messages=messages, request_id=f"lq-{uuid.uuid4().hex[:12]}")


def test_the_coding_trace_is_routed_by_task_type(coding_gateway: Any, sessions: Any) -> None:
    trace = load_trace(OUT)
    picked: list[dict[str, Any]] = []
    for label in EXPECTED:  # four of each kind, hinted and not
        picked += [d for d in trace if d["tags"]["label"] == label][:4]
    run = uuid.uuid4().hex[:8]
    handles = []
    for i, data in enumerate(picked):
        handles.append((data["tags"]["label"], coding_gateway.submit(
            dict(data, request_id=f"lad-{run}-{i:03d}", cache={"mode": "bypass"}))))
    for label, handle in handles:
        result = handle.result(timeout=60)
        assert result.model == EXPECTED[label], (label, result.route.reason)
        assert result.route.task_type == label
        assert result.cost > 0
    with sessions() as s:
        rows = s.execute(select(LedgerRow.task_type, LedgerRow.rung, LedgerRow.model,
                                LedgerRow.route_reason, LedgerRow.cost)
                         .where(LedgerRow.request_id.startswith(f"lad-{run}-"))).all()
        lines = {line.key[0]: line for line in spend.spend_lines(
            s, "task_type", request_id_prefix=f"lad-{run}-")}
    assert len(rows) == len(picked)
    rungs = {"gpt-4o-mini": 0, "claude-haiku-4-5": 1, "claude-sonnet-4-6": 2}
    for task_type, rung, model, reason, _cost in rows:
        assert model == EXPECTED[task_type] and rung == rungs[model]
        assert reason.startswith("ladder coding: task ") and ("header" in reason
                                                               or "rule" in reason)
    assert Counter(r.task_type for r in rows) == Counter(
        {k: 4 for k in EXPECTED})
    assert set(lines) == set(EXPECTED)
    assert sum((line.cost for line in lines.values()), Decimal(0)) == sum(r.cost for r in rows)
    # Sonnet's edits are the dearest part of the bill, as in the brief.
    assert lines["multi-file-edit"].cost > lines["explain"].cost


def test_a_failing_rung_climbs_inside_a_reservation_for_the_dearest_rung(
        coding_gateway: Any, sessions: Any, standin: Any) -> None:
    from models.db.budgets import ReservationRow, set_budget
    from models.domain.catalogue import load_catalogue
    from models.domain.cost import worst_case_cost
    from models.domain.request import parse_request
    from models.domain.tokens import prompt_count

    user = f"lad-{uuid.uuid4().hex[:8]}"
    with sessions() as s:
        set_budget(s, "user", user, "total", hard=Decimal("5"))
        s.commit()
    coding_gateway.admission.invalidate()
    data = dict(_ask("autocomplete", user), user=user, cache={"mode": "bypass"})
    standin.script_faults(["500"] * 3, model="claude-haiku-4-5", path="anthropic")
    result = coding_gateway.submit(data).result(timeout=60)
    assert result.model == "claude-sonnet-4-6" and "fallback to claude-sonnet-4-6" in \
        result.route.reason
    cat = load_catalogue()
    with sessions() as s:
        res = s.execute(select(ReservationRow).where(
            ReservationRow.request_id == data["request_id"])).scalar_one()
        row = ledger.get(s, data["request_id"])
    prompt = prompt_count(parse_request(data))
    sonnet = worst_case_cost(prompt, data["max_tokens"], cat.get("claude-sonnet-4-6"))
    # Reserved at admission for Sonnet, the dearest rung it could reach, not for Haiku.
    assert res.amount >= sonnet > worst_case_cost(prompt, data["max_tokens"],
                                                  cat.get("claude-haiku-4-5"))
    assert res.actual == row.cost and row.cost <= res.amount
    assert row.attempts == 4 and row.task_type == "autocomplete"


def test_ladder_answers_are_cached_per_task_type(coding_gateway: Any) -> None:
    data = _ask("explain", uuid.uuid4().hex)
    first = coding_gateway.submit(data).result(timeout=60)
    assert first.model == "gpt-4o-mini" and not first.cache_hit
    again = coding_gateway.submit(dict(data, request_id=data["request_id"] + "b")
                                  ).result(timeout=60)
    assert again.cache_hit and again.model == "gpt-4o-mini"
    # The same prompt named as another task type goes to another rung: not that answer.
    other = dict(data, request_id=data["request_id"] + "c",
                 tags={**data["tags"], "task_type": "multi-file-edit"})
    edit = coding_gateway.submit(other).result(timeout=60)
    assert not edit.cache_hit and edit.model == "claude-sonnet-4-6"


def test_an_operator_changes_the_ladder_without_a_deploy(coding_gateway: Any,
                                                         ladder_env: dict[str, str],
                                                         pg_url: str) -> None:
    import json
    import time

    from tests.e2e.cli_support import sluice

    changed = json.loads(json.dumps(CODING_LADDER))
    for t in changed["task_types"]:
        if t["name"] == "explain":
            t["rung"] = "claude-haiku-4-5"
    spec = OUT.parent / f".ladder-{uuid.uuid4().hex[:6]}.json"
    spec.write_text(json.dumps(changed))
    try:
        done = sluice(["ladders", "set", "coding", "--from-file", str(spec), "--reason",
                       "explanations need more care"],
                      {**ladder_env, "SLUICE_ACTOR": "ops-bob"})
    finally:
        spec.unlink()
    assert done.returncode == 0, done.stderr
    deadline = time.time() + 15  # the producer looks at the file at most once a second
    model = ""
    while model != "claude-haiku-4-5" and time.time() < deadline:
        model = coding_gateway.submit(dict(_ask("explain", uuid.uuid4().hex),
                                           cache={"mode": "bypass"})).result(timeout=60).model
        time.sleep(0.3)
    from scheduler.router.ladder import ladder_from_dict
    from scheduler.router.ladder_book import write_ladders

    write_ladders(ladder_env["SLUICE_ROUTING__LADDERS_PATH"],
                  {"coding": ladder_from_dict("coding", CODING_LADDER)})  # as it was
    assert model == "claude-haiku-4-5"
    from models.db.audit import list_actions

    engine = make_engine(pg_url)
    try:
        with session_factory(engine)() as s:
            entry = list_actions(s, action="ladders.set")[-1]
    finally:
        engine.dispose()
    assert entry.actor == "ops-bob" and entry.reason == "explanations need more care"


def test_the_doors_take_the_task_type_header(coding_gateway: Any, ladder_env: dict[str, str],
                                             pg_url: str) -> None:
    import anthropic
    import openai

    from models.domain.settings import load_settings
    from tests.e2e.frontdoor_support import mint, serve_frontdoor

    key = mint(pg_url, "devtools")
    with serve_frontdoor(load_settings(dict(ladder_env))) as url:
        client = openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0, timeout=60)
        ask = f"anything at all {uuid.uuid4().hex}"
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": ask}], max_tokens=32,
            extra_headers={"x-sluice-feature": "coding", "x-sluice-task-type": "explain",
                           "x-sluice-cache-mode": "bypass"})
        assert raw.parse().model == "gpt-4o-mini"
        assert "model=gpt-4o-mini" in raw.headers["x-sluice-route"]
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": ask}], max_tokens=32,
                extra_headers={"x-sluice-feature": "coding", "x-sluice-task-type": "poem"})
        assert "autocomplete, multi-file-edit, explain" in str(bad.value)
        client.close()
        claude = anthropic.Anthropic(api_key=key, base_url=url, max_retries=0, timeout=60)
        reply = claude.messages.create(
            model="auto", max_tokens=32, messages=[{"role": "user", "content": ask + " 2"}],
            extra_headers={"x-sluice-feature": "coding",
                           "x-sluice-task-type": "multi-file-edit",
                           "x-sluice-cache-mode": "bypass"})
        assert reply.model == "claude-sonnet-4-6"
        claude.close()
