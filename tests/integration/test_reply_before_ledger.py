"""Reproductions from the review of 973eff9..main (reply before the ledger write; group
commit of the GPU lane's claim and attempt rows). Each fails on main as reviewed."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import attempts, ledger
from models.db.attempts import AttemptRow
from models.db.budgets import ReservationRow
from models.db.engine import autocommit_engine, make_engine, session_factory
from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import load_settings
from queues.envelope import Envelope
from queues.response_cache import RedisResponseCache
from workers.runtime import build_runtime
from workers.service import execute

pytestmark = pytest.mark.integration


@pytest.fixture()
def worker_rt(integration_env: dict[str, str]) -> Iterator[Any]:
    cache = RedisResponseCache(load_settings(integration_env))
    runtime = build_runtime(load_settings(integration_env), admission=None, cache=cache)
    yield runtime
    runtime.close()
    cache.close()


def test_a_paid_answer_the_cache_cannot_store_is_still_billed(worker_rt: Any,
                                                               standin: Any) -> None:
    """The provider answers with a lone surrogate in its text (json.loads of a "\\ud83d"
    escape; models.db.stored_text.storable exists for such text). The response-cache store
    now runs *before* the stash and the ledger write (workers/service.py:178): its
    ``encode_value`` (model_dump_json) raises PydanticSerializationError, which the cache's
    ``_safe`` does not catch (only Redis/OS errors). The exception leaves ``_run`` before
    ``keep`` and ``_bill``: the paid call stays a ``sent`` attempt under a ``running`` row,
    no stash, no reply. On 973eff9 the store ran after the final write (the row was billed)."""
    provider = worker_rt.provider("openai")
    original = provider.complete

    def surrogate_reply(call: Any) -> Any:
        reply = original(call)
        return dataclasses.replace(reply, text=reply.text + "\ud83d")

    provider.complete = surrogate_reply  # type: ignore[method-assign]
    request = parse_request({"request_id": f"rv-{uuid.uuid4().hex}", "team": "support",
                             "feature": f"rv-{uuid.uuid4().hex[:8]}", "model": "cheap",
                             "max_tokens": 16,
                             "messages": [{"role": "user", "content": "What is a VLAN?"}]})
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive", reason="policy: cheap")
    try:
        reply: Any = execute(Envelope(request=request, route=route).to_message(), worker_rt)
    except Exception as exc:  # noqa: BLE001 - what the task would raise
        reply = exc
    finally:
        provider.complete = original  # type: ignore[method-assign]
    with worker_rt.session() as s:
        row = ledger.get(s, request.request_id)
        outcomes = [a.outcome for a in attempts.of_request(s, request.request_id)]
    assert row is not None
    assert row.outcome == "ok" and "sent" not in outcomes, (
        f"a paid answer was left unbilled: row {row.outcome}, attempts {outcomes}, "
        f"execute gave {reply!r}")
    assert isinstance(reply, dict) and reply.get("ok"), reply


@pytest.fixture(scope="module")
def pg(pg_url: str) -> Iterator[tuple[Any, Any]]:
    base = make_engine(pg_url, pool_size=2)
    fast = autocommit_engine(base, 2, durable=True)
    yield session_factory(base), fast
    fast.dispose()
    base.dispose()


def _values(rid: str, **over: Any) -> dict[str, Any]:
    return dict({"request_id": rid, "run": "r1", "org": "default", "team": "gc",
                 "feature": "group", "provider": "vllm", "model": "sluice-tiny-llama",
                 "deployment": "", "kind": "call", "stream": False, "batch": False,
                 "worst_case": Decimal("0.01")}, **over)


def _open_reservation(sessions: Any, request_id: str) -> tuple[str, datetime]:
    rid = uuid.uuid4().hex
    now = datetime.now(timezone.utc)
    with sessions() as s:
        s.add(ReservationRow(id=rid, request_id=request_id, owner="default/gc",
                             amount=Decimal("0.01"), budget_ids="", state="open", queue="",
                             created_at=now, expires_at=now + timedelta(minutes=5)))
        s.commit()
    return rid, now + timedelta(minutes=10)


def _rows_of(fast: Any, request_id: str) -> int:
    with fast.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AttemptRow).where(
            AttemptRow.request_id == request_id)).scalar_one())


def test_a_refused_held_batch_writes_an_attempt_it_then_writes_again(
        pg: tuple[Any, Any]) -> None:
    """GroupCommit writes a batch alone again when ``refused`` says the database refused it,
    "nothing was written". Held attempts (every attempt under a reservation: the common
    case) are written one autocommit statement each (ledger_writes.write_attempts), so an item
    refused after others committed leaves those others written; the one-by-one pass writes
    them a second time. The orphan ``sent`` row is charged at its worst case by charge_lost
    when the request finishes: a call billed twice, its reservation overrun by the orphan."""
    from workers.group_commit import GroupCommit, _Slot
    from workers.ledger_writes import refused, write_attempt, write_attempts

    sessions, fast = pg
    good_id, bad_id = f"gc-{uuid.uuid4().hex}", f"gc-{uuid.uuid4().hex}"
    good = (_values(good_id), _open_reservation(sessions, good_id))
    bad = (_values(bad_id, kind=None), _open_reservation(sessions, bad_id))  # NOT NULL

    def on(write: Any) -> Any:
        with fast.connect() as conn:
            return write(conn)

    batcher: GroupCommit[Any, Any] = GroupCommit(
        lambda item: on(lambda c: write_attempt(c, item)),
        lambda items: on(lambda c: write_attempts(c, items)), writers=2, alone_after=refused)
    slots = [_Slot(good), _Slot(bad)]
    batcher._write(slots)
    assert slots[0].error is None and slots[0].result is not None
    assert slots[1].error is not None
    assert _rows_of(fast, good_id) == 1, (
        f"the good attempt was written {_rows_of(fast, good_id)} times for one call")
