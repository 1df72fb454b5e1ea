"""RabbitMQ as the broker: quorum queues, publisher confirms, countdowns carried by the broker."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.domain.request import parse_request
from queues.names import DEAD_LETTER, QUEUES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def req(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"request_id": f"amqp-{uuid.uuid4().hex}", "team": "catalog",
                            "feature": "title-rephrase", "user": "u1", "max_tokens": 16,
                            "model": "cheap", "cache": {"mode": "bypass"},
                            "messages": [{"role": "user", "content": "Rephrase: red mug"}]}
    data.update(kw)
    return data


def test_the_four_queues_and_the_dead_letters_are_quorum_queues(
        rabbitmq_gateway: Any, rabbitmq_vhost_url: str) -> None:
    from tests.rabbitmq import queue_types

    assert rabbitmq_gateway.complete(req(), timeout=30).text
    types = queue_types(rabbitmq_vhost_url)
    # Declared by the worker at start, GPU queues included though it consumes only the api ones.
    assert {q: types.get(q) for q in (*QUEUES, DEAD_LETTER)} == {
        q: "quorum" for q in (*QUEUES, DEAD_LETTER)}


def test_every_publish_waits_for_the_brokers_confirm(rabbitmq_gateway: Any) -> None:
    with rabbitmq_gateway.app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        assert channel.connection.confirm_publish is True
        # py-amqp swaps the channel's publish for the one that waits for basic.ack.
        assert channel.basic_publish.__func__ is type(channel).basic_publish_confirm


def test_rabbitmq_has_no_in_flight_record_to_sweep(rabbitmq_gateway: Any) -> None:
    """The broker requeues a dead consumer's unacked messages itself: the Redis transport's
    in-flight record (and its per-publish round trip) is not kept, and the sweep has nothing
    to do."""
    assert rabbitmq_gateway.inflight is None


def test_a_busy_claim_comes_back_through_the_brokers_delayed_delivery(
        rabbitmq_gateway: Any, sessions: Any) -> None:
    """A live claim (its worker may have died mid-call) makes the task retry with a countdown
    past the claim's lease. Quorum queues fix a consumer's prefetch, so the countdown is held
    by the broker's delayed-delivery exchanges, not in the worker; it comes back, takes the
    expired claim over and answers."""
    donor = rabbitmq_gateway.complete(req(), timeout=30)
    data = req()
    answer = donor.model_copy(update={"request_id": data["request_id"]})
    claim = ledger.row_from_result(parse_request(data), answer, outcome="running",
                                   now=datetime.now(timezone.utc) - timedelta(seconds=1))
    claim.update(cost=Decimal(0), baseline_cost=Decimal(0), list_cost=Decimal(0))
    with sessions() as s:  # a claim still inside its 5 s lease
        assert ledger.record(s, claim)
        s.commit()
    t0 = time.monotonic()
    result = rabbitmq_gateway.submit(data).result(timeout=40)
    waited = time.monotonic() - t0
    assert result.request_id == data["request_id"] and result.text
    assert waited > 4, f"answered after {waited:.1f} s: the live claim was not respected"
    with sessions() as s:
        row = ledger.get(s, data["request_id"])
    assert row is not None and row.outcome == "ok" and row.cost == result.cost


def test_a_poison_message_is_parked_on_the_quorum_dead_letter_queue(
        rabbitmq_gateway: Any, rabbitmq_env: dict[str, str]) -> None:
    """Parking declares the dead-letter queue as the app does: redeclaring the topic exchange
    as direct (as on Redis) would fail every park with PRECONDITION_FAILED."""
    from kombu import Connection, Exchange

    from models.domain.settings import load_settings
    from queues.app import create_app
    from queues.dead_letter import drain

    settings = load_settings(dict(rabbitmq_env))
    app = create_app(settings, name="amqp-dead-letter")
    marker = uuid.uuid4().hex[:8]
    try:
        drain(app, timeout=0.2)
        with Connection(settings.broker.url) as conn:
            conn.Producer().publish(f"{{not json {marker}".encode(), routing_key="interactive.api",
                                    exchange=Exchange("sluice", type="topic"),
                                    content_type="application/json", content_encoding="utf-8")
        parked: list[dict[str, Any]] = []
        deadline = time.time() + 30
        while not parked and time.time() < deadline:
            parked += [p for p in drain(app, timeout=0.5) if marker in str(p.get("body"))]
        assert parked and parked[0]["reason"].startswith("undecodable message"), parked
        assert rabbitmq_gateway.complete(req(), timeout=30).text  # the worker still serves
    finally:
        app.close()


def test_what_the_broker_would_drop_goes_to_the_dead_letters(
        rabbitmq_gateway: Any, rabbitmq_env: dict[str, str]) -> None:
    """A message rejected without requeue (or past a quorum queue's delivery limit) is
    dead-lettered to ``sluice.dead``, not dropped. interactive.gpu has no consumer here."""
    from kombu import Connection, Exchange

    from models.domain.settings import load_settings
    from queues.app import create_app
    from queues.dead_letter import drain

    settings = load_settings(dict(rabbitmq_env))
    app = create_app(settings, name="amqp-dlx")
    marker = uuid.uuid4().hex[:8]
    try:
        drain(app, timeout=0.2)
        with Connection(settings.broker.url) as conn:
            conn.Producer().publish({"marker": marker}, routing_key="interactive.gpu",
                                    exchange=Exchange("sluice", type="topic"), serializer="json")
            queue = conn.SimpleQueue(app.amqp.queues["interactive.gpu"])
            queue.get(timeout=10).reject(requeue=False)
            queue.close()
        deadline = time.time() + 15
        found: list[dict[str, Any]] = []
        while not found and time.time() < deadline:
            found = [p for p in drain(app, timeout=0.5) if p == {"marker": marker}]
        assert found, "the rejected message was dropped"
    finally:
        app.close()
