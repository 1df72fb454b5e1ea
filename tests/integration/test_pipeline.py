"""One request end to end: producer → Redis or RabbitMQ → real Celery worker → provider SDK →
PostgreSQL ledger."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import baseline_cost, cost_of
from models.domain.errors import ProviderPermanent, UnknownModelError, ValidationError
from models.domain.tokens import count_request
from models.domain.request import parse_request

pytestmark = pytest.mark.integration
CAT = load_catalogue()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def gateway(request: Any) -> Any:
    """Every test here runs on both brokers: the session's Redis gateway, then RabbitMQ's."""
    return request.getfixturevalue("gateway" if request.param == "redis"
                                   else "rabbitmq_gateway")


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def req(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"request_id": f"t-{uuid.uuid4().hex}", "team": "catalog",
                            "feature": "title-rephrase", "user": "u1", "max_tokens": 40,
                            "cache": {"mode": "bypass"},
                            "messages": [{"role": "user", "content": "Rephrase: blue mug"}]}
    data.update(kw)
    return data


def row(sessions: Any, request_id: str) -> LedgerRow:
    with sessions() as s:
        found = ledger.get(s, request_id)
    assert found is not None, f"no ledger row for {request_id}"
    return found


def test_openai_request_is_priced_exactly_in_the_ledger(gateway: Any, sessions: Any) -> None:
    data = req(model="cheap", static={"system": "You write product titles."})
    result = gateway.complete(data, timeout=30)
    model = CAT.get("gpt-4o-mini")
    assert result.model == "gpt-4o-mini" and result.provider == "openai" and result.text
    assert result.usage.input_total == count_request(parse_request(data))
    assert result.cost == cost_of(result.usage, model)
    assert result.baseline_cost == baseline_cost(result.usage, CAT.get("gpt-4o"))
    assert result.cost < result.baseline_cost
    r = row(sessions, data["request_id"])
    assert (r.team, r.feature, r.user, r.lane, r.tier, r.model) == (
        "catalog", "title-rephrase", "u1", "interactive", "cheap", "gpt-4o-mini")
    assert r.outcome == "ok" and r.cost == result.cost and isinstance(r.cost, Decimal)
    assert r.baseline_cost == result.baseline_cost
    assert r.price_version == CAT.version and len(r.prompt_hash) == 64
    assert r.input_uncached == result.usage.input_uncached and r.output == result.usage.output
    assert result.timings.total_ms >= result.timings.provider_ms > 0


def test_anthropic_request_bills_cache_writes_then_reads(gateway: Any, sessions: Any) -> None:
    # A prefix of this test's own: the stand-in keeps its prompt cache across brokers' runs.
    system = f"Support policy {uuid.uuid4().hex}. " + " ".join(
        f"Clause {i}: answer kindly." for i in range(500))
    first = gateway.complete(req(model="claude-sonnet-4-6", static={"system": system}), 30)
    second = gateway.complete(req(model="claude-sonnet-4-6", static={"system": system},
                                  messages=[{"role": "user", "content": "Other question"}]), 30)
    sonnet = CAT.get("claude-sonnet-4-6")
    assert first.usage.cache_write_5m > 1024 and first.usage.cache_read == 0
    assert second.usage.cache_read == first.usage.cache_write_5m
    assert second.cost == cost_of(second.usage, sonnet) < first.cost
    assert row(sessions, second.request_id).cache_read == second.usage.cache_read


def test_async_lane_travels_its_own_queue(gateway: Any, sessions: Any) -> None:
    data = req(lane="async", model="cheap")
    result = gateway.complete(data, timeout=30)
    assert result.route.lane == "async" and result.route.queue == "async.api"
    assert row(sessions, data["request_id"]).lane == "async"


def test_fire_and_forget_still_lands_in_the_ledger(gateway: Any, sessions: Any) -> None:
    data = req(model="cheap")
    gateway.submit(data).forget()
    deadline = time.time() + 20
    while time.time() < deadline:
        with sessions() as s:
            r = ledger.get(s, data["request_id"])
        if r is not None and r.outcome == "ok":
            return
        time.sleep(0.05)
    pytest.fail("fire-and-forget request never reached the ledger")


def chat_calls(standin: Any) -> int:
    """Chat completions the stand-in answered (batch polls and other paths not counted)."""
    return int(standin.stats()["by_path"].get("/v1/chat/completions", 0))


def test_running_twice_writes_one_row_and_calls_once(gateway: Any, sessions: Any,
                                                     standin: Any) -> None:
    data = req(model="cheap")
    first = gateway.complete(data, timeout=30)
    calls = chat_calls(standin)
    again = gateway.complete(data, timeout=30)  # same request id: a duplicate delivery
    assert again.text == first.text and again.cost == first.cost
    assert chat_calls(standin) == calls, "the duplicate reached the provider"
    with sessions() as s:
        n = s.scalar(select(func.count()).where(LedgerRow.request_id == data["request_id"]))
    assert n == 1


def test_answers_are_pushed_to_the_waiting_handle(gateway: Any, monkeypatch: Any) -> None:
    """The worker's store must publish: with the stored-result fallback read disabled, only the
    push can deliver (a stash or store that skips it leaves every caller waiting a slice)."""
    import queues.handle as handle_mod

    monkeypatch.setattr(handle_mod, "stored_reply", lambda ar: handle_mod.PENDING)
    monkeypatch.setattr(handle_mod, "PUSH_SLICE_S", 60.0)
    data = req(model="cheap")
    t0 = time.monotonic()
    result = gateway.submit(data).result(timeout=40)
    assert result.request_id == data["request_id"] and result.text
    # Not a speed check: without the push the answer only shows up when the wait gives up.
    assert time.monotonic() - t0 < 15, "the answer was stored but never pushed"


def stash_answer(gateway: Any, request: Any, reply: dict[str, Any],
                 reservation_id: str | None = None) -> None:
    """What a worker keeps before its ledger write (workers.tasks._Stash), written by hand."""
    from queues.envelope import STASH_SUFFIX, task_id_for

    backend = gateway.app.backend
    backend.client.set(backend.get_key_for_task(task_id_for(request), key=STASH_SUFFIX),
                       backend.encode({"reply": reply, "reservation_id": reservation_id}))


def test_an_answer_left_by_a_dead_run_is_billed_not_bought_again(gateway: Any, sessions: Any,
                                                                standin: Any) -> None:
    """A worker killed after stashing its answer but before its ledger write: the redelivered
    task takes over the expired claim, finds the answer and bills it; no second provider call.
    A busy-claim retry left RETRY on the task's result key meanwhile: the stash is apart."""
    from datetime import datetime, timedelta, timezone

    from queues.envelope import ok_reply, task_id_for

    donor = gateway.complete(req(model="cheap"), timeout=30)
    data = req(model="cheap")
    request = parse_request(data)
    answer = donor.model_copy(update={"request_id": data["request_id"]})
    claim = ledger.row_from_result(request, answer, outcome="running",
                                   now=datetime.now(timezone.utc) - timedelta(hours=1))
    claim.update(cost=Decimal(0), baseline_cost=Decimal(0), list_cost=Decimal(0))
    with sessions() as s:  # the dead run's claim, long expired, nothing billed yet
        assert ledger.record(s, claim)
        s.commit()
    stash_answer(gateway, request, ok_reply(answer))
    gateway.app.backend.store_result(task_id_for(request), ValueError("claim busy"), "RETRY")
    calls = chat_calls(standin)
    result = gateway.submit(data).result(timeout=30)  # the redelivery
    assert result.text == donor.text and result.cost == donor.cost
    deadline = time.time() + 15
    while row(sessions, data["request_id"]).outcome == "running":
        assert time.time() < deadline, "the redelivered task never billed the stored answer"
        time.sleep(0.05)
    r = row(sessions, data["request_id"])
    assert (r.outcome, r.cost, r.output) == ("ok", donor.cost, donor.usage.output)
    assert chat_calls(standin) == calls, "the stored answer was bought again"


def test_a_billed_answer_whose_push_died_with_its_worker_still_reaches_the_caller(
        gateway: Any, sessions: Any, standin: Any) -> None:
    """Killed after the ledger write but before Celery stored the reply: the stash still holds
    it, so the redelivery answers with it (once this ended in a ResultLost error)."""
    from queues.envelope import ok_reply

    donor = gateway.complete(req(model="cheap"), timeout=30)
    data = req(model="cheap")
    request = parse_request(data)
    answer = donor.model_copy(update={"request_id": data["request_id"]})
    with sessions() as s:  # the dead run's finished row
        assert ledger.record(s, ledger.row_from_result(request, answer))
        s.commit()
    stash_answer(gateway, request, ok_reply(answer))
    calls = chat_calls(standin)
    result = gateway.submit(data).result(timeout=30)  # the redelivery
    assert (result.text, result.cost) == (donor.text, donor.cost)
    assert chat_calls(standin) == calls
    assert row(sessions, data["request_id"]).cost == donor.cost


def test_bad_input_is_refused_before_the_queue(gateway: Any, sessions: Any, standin: Any) -> None:
    calls = chat_calls(standin)
    with pytest.raises(UnknownModelError) as exc:
        gateway.submit(req(model="gpt-17"))
    assert exc.value.field == "model"
    with pytest.raises(ValidationError) as exc2:
        gateway.submit(req(lane="urgent"))
    assert exc2.value.field == "lane"
    assert chat_calls(standin) == calls


def test_permanent_provider_error_is_typed_and_costs_nothing(gateway: Any, sessions: Any,
                                                             standin: Any) -> None:
    standin.script_faults(["400"], path="openai", model="gpt-4o-mini")
    data = req(model="cheap")
    with pytest.raises(ProviderPermanent) as exc:
        gateway.complete(data, timeout=30)
    assert exc.value.status == 400
    r = row(sessions, data["request_id"])
    assert r.outcome == "error" and r.error_code == "provider_permanent" and r.cost == 0


def test_transient_faults_are_retried_once_by_us(gateway: Any, sessions: Any,
                                                 standin: Any) -> None:
    standin.script_faults(["429;retry-after=0", "503"], path="openai", model="gpt-4o-mini")
    before = chat_calls(standin)
    data = req(model="cheap")
    result = gateway.complete(data, timeout=30)
    assert result.text
    assert chat_calls(standin) - before == 3  # two faults, one success: no SDK retries
    assert row(sessions, data["request_id"]).outcome == "ok"


def test_a_handle_can_be_awaited_without_blocking_the_loop(gateway: Any) -> None:
    import asyncio

    async def main() -> list[Any]:
        handles = [gateway.submit(req(model="cheap")) for _ in range(4)]
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(*handles)
        t.cancel()
        assert ticks > 0  # the loop kept running while results were awaited
        return results

    results = asyncio.run(main())
    assert len({r.request_id for r in results}) == 4 and all(r.text for r in results)


def test_volatile_content_in_the_static_part_is_flagged_in_the_ledger(gateway: Any,
                                                                      sessions: Any) -> None:
    clean = gateway.complete(req(model="cheap", static={"system": "You write titles."}), 30)
    dirty = gateway.complete(req(model="cheap", static={
        "system": "You write titles. Generated at 2026-11-27T10:15:00Z for req-77a1b2c3."}), 30)
    assert row(sessions, clean.request_id).volatile_prefix is False
    assert row(sessions, dirty.request_id).volatile_prefix is True
