"""Advisor estimates checked against a replay on real workers: the trace as sent, the advice
read from its ledger, then the same trace with the advised lever applied."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db.tables import LedgerRow
from tests.services import run_token

pytestmark = pytest.mark.integration
TOKEN = run_token()
# A system prompt with a timestamp and a request id in it; one feature keeps its text (the
# advisor reads the prefix from it), the other does not (it reads the ledger only).
STABLE = f"stable-prefix-{TOKEN}"
STABLE_CLAUDE = f"stable-prefix-claude-{TOKEN}"
REPEATS = f"repeats-{TOKEN}"  # exact repeats the response cache was bypassed for
PRICED = f"priced-{TOKEN}"  # a flagship model a same-tier peer undercuts


@pytest.fixture(scope="module")
def replay_gateway(integration_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Any]:
    """A worker on queues of its own; the replayed features keep their text."""
    from tests.worker_proc import worker_gateway

    env = {**integration_env, "SLUICE_BROKER__KEY_PREFIX": f"sga{TOKEN}:",
           "SLUICE_PRIVACY__STORE_TEXT_FEATURES": json.dumps([STABLE])}
    log = tmp_path_factory.mktemp("advisor") / "worker.log"
    with worker_gateway(env, log, name=f"advisor-{TOKEN}") as gw:
        yield gw



def _advice(sessions: Any, since: datetime, feature: str, lever: str) -> Any:
    from models.domain.catalogue import load_catalogue
    from ops.advise import advise

    with sessions() as s:
        lines = [a for a in advise(s, load_catalogue(), since=since, feature=feature)
                 if a.lever == lever]
    assert len(lines) == 1, f"expected one {lever} line for {feature}: {lines}"
    return lines[0]


def _billed(sessions: Any, request_ids: list[str]) -> Decimal:
    """What the ledger charged for these requests, once each has its final row (a response-
    cache hit's row is written off the hot path, so it may land a moment later)."""
    deadline = time.time() + 30
    while True:
        with sessions() as s:
            rows = s.execute(select(func.count(), func.coalesce(func.sum(LedgerRow.cost), 0))
                             .where(LedgerRow.request_id.in_(request_ids),
                                    LedgerRow.outcome.in_(("ok", "cache_hit")))).one()
        if rows[0] == len(request_ids) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert rows[0] == len(request_ids), "every request of the trace has its ledger row"
    return Decimal(rows[1])


def _complete(gw: Any, **request: Any) -> str:
    rid = f"adv-{uuid.uuid4().hex}"
    gw.complete({"request_id": rid, "team": "catalog", **request}, timeout=60)
    return rid


def _within(estimate: Decimal, actual: Decimal) -> None:
    assert actual > 0
    assert abs(estimate - actual) <= Decimal("0.10") * actual, (estimate, actual)


def _rules() -> str:
    # ~1,500 tokens of instructions: past the 1,024-token minimum, clear of a 128-token step.
    return f"[{TOKEN}] " + " ".join(f"Rule {i}: describe the item plainly, in short concrete "
                                    "sentences." for i in range(110))


def _stamp(i: int) -> str:
    return (f"Generated at 2026-12-02T10:{i:02d}:00Z for request "
            f"req-{uuid.uuid4().hex[:8]}.")


def _send(gw: Any, feature: str, model: str, volatile_in_prefix: bool) -> list[str]:
    """The trace, one request at a time (each answer billed before the next asks, so a prefix
    cached by one request is there for the next): eight item descriptions whose system prompt
    carries the volatile stamp, or whose user message does (the lever applied)."""
    ids = []
    for i in range(8):
        stamp, ask = _stamp(i), f"Describe item {i}."
        system = f"{_rules()} {stamp}" if volatile_in_prefix else _rules()
        content = ask if volatile_in_prefix else f"{stamp}\n{ask}"
        ids.append(_complete(gw, feature=feature, model=model, max_tokens=8,
                             cache={"mode": "bypass"}, static={"system": system},
                             messages=[{"role": "user", "content": content}]))
    return ids


@pytest.mark.parametrize(("feature", "model"), [(STABLE, "gpt-4.1"),
                                                (STABLE_CLAUDE, "claude-sonnet-4-5")])
def test_advisor_stable_prefix_estimate_matches_a_replay_with_the_stamp_moved(
        replay_gateway: Any, sessions: Any, feature: str, model: str) -> None:
    started = datetime.now(timezone.utc)
    paid = _billed(sessions, _send(replay_gateway, feature, model, volatile_in_prefix=True))
    with sessions() as s:
        flagged = s.scalar(select(func.count()).select_from(LedgerRow).where(
            LedgerRow.feature == feature, LedgerRow.volatile_prefix.is_(True),
            LedgerRow.cache_read > 0))
    assert flagged == 0, "a prefix with a fresh stamp each time must not read the cache"
    advice = _advice(sessions, started, feature, "stable-prefix")
    assert "8 requests" in advice.action
    # The same trace with the stamp moved from the system prompt into the user message.
    replayed = _billed(sessions, _send(replay_gateway, feature, model, volatile_in_prefix=False))
    _within(advice.window_saving, paid - replayed)


def test_advisor_response_cache_estimate_matches_a_replay_with_the_cache_used(
        replay_gateway: Any, sessions: Any) -> None:
    # Four questions asked three times each, one at a time, the cache bypassed.
    trace = [f"[{TOKEN}] What is the return window for item {i % 4}?" for i in range(12)]

    def send(mode: str) -> list[str]:
        return [_complete(replay_gateway, feature=REPEATS, model="cheap", max_tokens=24,
                          cache={"mode": mode}, messages=[{"role": "user", "content": p}])
                for p in trace]

    started = datetime.now(timezone.utc)
    paid = _billed(sessions, send("bypass"))
    advice = _advice(sessions, started, REPEATS, "response-cache")
    assert "8 exact repeats" in advice.action
    replayed = _billed(sessions, send("use"))  # the lever applied: the cache read and written
    _within(advice.window_saving, paid - replayed)


def test_advisor_model_price_estimate_matches_a_replay_on_the_model_it_names(
        replay_gateway: Any, sessions: Any) -> None:
    trace = [f"[{TOKEN}] Write a product description of item {i} for the catalogue."
             for i in range(8)]

    def send(model: str) -> list[str]:
        return [_complete(replay_gateway, feature=PRICED, model=model, max_tokens=16,
                          cache={"mode": "bypass"}, messages=[{"role": "user", "content": p}])
                for p in trace]

    started = datetime.now(timezone.utc)
    paid = _billed(sessions, send("gpt-4o"))
    advice = _advice(sessions, started, PRICED, "model-price")
    replayed = _billed(sessions, send(advice.model))  # the same trace on the proposed model
    _within(advice.window_saving, paid - replayed)
