"""A stateful property over the worker's money path: no interleaving leaks spend or an attempt.

The real ``execute`` (claim, second check, attempts, retries, fallbacks, settlement) runs on
the embedded SQLite ledger with real admission, against a scripted provider. Hypothesis
interleaves submits, deliveries whose attempts succeed, fail unbilled (5xx), time out (billed
unknown), return garbage, or die with their worker mid-call; redeliveries, cancels, budget
changes and the governor's lease expiry. After every step: no budget's settled spend plus what it
holds passes the largest hard limit it has had, every provider call is exactly one attempt row, each
request's row costs the sum of its attempts, and finished requests hold no open reservation.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, \
    run_state_machine_as_test
from sqlalchemy import func, select, text

from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.errors import BudgetExceeded, ProviderRetryable
from models.domain.request import parse_request
from models.domain.settings import load_settings
from models.domain.tokens import PromptCount, prompt_count
from models.domain.usage import Usage
from ops.db import upgrade
from queues.envelope import Envelope, task_id_for
from scheduler import governor
from scheduler.admission import SqlAdmission
from scheduler.route import decide_route
from workers.heartbeat import Beat
from workers.providers.base import ProviderCall, ProviderReply
from workers.runtime import build_runtime
from workers.service import execute

FEATURES = ("f1", "f2")
OUTCOMES = ("ok", "500", "timeout", "garbage", "kill", "kill")


class WorkerKilled(BaseException):
    """The worker process dies mid-call (kill -9): nothing after the call runs."""


class Scripted:
    """A provider whose every call takes the next outcome of its script (default ``ok``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script: list[str] = []
        self.calls: dict[str, int] = {}

    def complete(self, call: ProviderCall) -> ProviderReply:
        rid = call.request.request_id
        self.calls[rid] = self.calls.get(rid, 0) + 1
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "500":
            raise ProviderRetryable(f"{self.name} answered 500", provider=self.name, status=500)
        if outcome == "timeout":
            raise ProviderRetryable(f"{self.name}: timeout", provider=self.name,
                                    billed="unknown")
        if outcome == "garbage":
            raise ProviderRetryable(f"{self.name}: not valid", provider=self.name,
                                    billed="unknown", unparseable=True)
        if outcome == "kill":
            raise WorkerKilled()
        return ProviderReply(text="answer", usage=Usage(input_uncached=call.request.max_tokens,
                                                        output=call.request.max_tokens // 2))

    def close(self) -> None:
        pass


class NoHeartbeat:
    """Runs are sequential here: a killed run's claim is stale at once (a live one never is)."""

    claim_ttl_s = 0.0

    def hold(self, request_id: str, lane: str, reservation_id: str | None) -> Beat:
        return Beat(request_id, lane, reservation_id)

    def drop(self, beat: Beat) -> None:
        pass

    def stop(self) -> None:
        pass


class Marks:
    """Cancel marks in memory (queues.cancel's interface)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def marked(self, task_id: str) -> bool:
        return task_id in self.ids


def machine_for(url: str, home: Path) -> type[RuleBasedStateMachine]:
    cfg = load_settings({"SLUICE_DATABASE__URL": url, "SLUICE_HOME": str(home),
                         "SLUICE_PROVIDERS__BACKOFF_BASE_S": "0",
                         "SLUICE_PROVIDERS__MAX_ATTEMPTS": "2",
                         "SLUICE_PROVIDERS__FALLBACKS": '{"gpt-4o-mini": ["gpt-4o"]}'})
    engine = make_engine(url)
    sessions = session_factory(engine)

    class MoneyMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with sessions() as s:
                for t in ("attempts", "ledger", "reservations", "budget_alerts", "pauses",
                          "budgets"):
                    s.execute(text(f"DELETE FROM {t}"))
                for f in FEATURES:
                    set_budget(s, "feature", f, "total", hard=Decimal("0.01"))
                s.commit()
            self.peak = {f: Decimal("0.01") for f in FEATURES}
            self.admission = SqlAdmission(sessions, lease_s={"interactive": 60, "async": 60})
            self.rt = build_runtime(cfg, admission=self.admission, cache=None)
            self.openai = Scripted("openai")
            self.rt.providers["openai"] = self.openai
            self.rt._heartbeat = NoHeartbeat()
            self.rt.cancels = Marks()
            self.queue: list[dict[str, Any]] = []  # messages a worker may still (re)deliver
            self.finished: set[str] = set()
            self.now = datetime.now(timezone.utc)

        def teardown(self) -> None:
            self.admission.close()

        @rule(feature=st.sampled_from(FEATURES), model=st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
              lane=st.sampled_from(["interactive", "async"]),
              max_tokens=st.integers(min_value=10, max_value=400))
        def submit(self, feature: str, model: str, lane: str, max_tokens: int) -> None:
            req = parse_request({"request_id": uuid.uuid4().hex, "team": "t", "feature": feature,
                                 "lane": lane, "model": model, "max_tokens": max_tokens,
                                 "messages": [{"role": "user", "content": "hello there"}]})
            route = decide_route(req, self.rt.catalogue, cfg.routing)
            prompt = prompt_count(req)
            tokens = prompt.tokens
            from models.domain.charges import reach_worst_case, reachable
            amount = reach_worst_case(prompt, req.max_tokens, reachable(
                self.rt.catalogue, cfg.providers.fallbacks, route.model))
            try:
                rid = self.admission.reserve(req, route, amount)
            except BudgetExceeded:
                return
            env = Envelope(request=req, route=route, prompt_tokens=tokens, reservation_id=rid)
            self.queue.append(env.to_message())

        @precondition(lambda self: bool(self.queue))
        @rule(i=st.integers(min_value=0), script=st.lists(st.sampled_from(OUTCOMES), max_size=4),
              keep=st.booleans())
        def deliver(self, i: int, script: list[str], keep: bool) -> None:
            """A worker runs the message; ``keep``: it stays queued (a redelivery may follow)."""
            msg = self.queue[i % len(self.queue)]
            self.openai.script = list(script)
            try:
                reply = execute(msg, self.rt)
            except WorkerKilled:
                return  # died mid-call: the message comes back
            finally:
                self.openai.script = []
            rid = msg["request"]["request_id"]
            if not (reply.get("error") or {}).get("code") == "claim_busy":
                self.finished.add(rid)
            if not keep:
                self.queue.remove(msg)

        @precondition(lambda self: bool(self.queue))
        @rule(i=st.integers(min_value=0), team=st.sampled_from(["t", "t2"]))
        def resubmit(self, i: int, team: str) -> None:
            """A retry under the same request id (``t``), or another team reusing it (``t2``)."""
            env = Envelope.model_validate(self.queue[i % len(self.queue)])
            req = env.request.model_copy(update={"team": team})
            from models.domain.charges import reach_worst_case, reachable
            amount = reach_worst_case(PromptCount(tokens=env.prompt_tokens), req.max_tokens, reachable(
                self.rt.catalogue, cfg.providers.fallbacks, env.route.model))
            try:
                rid = self.admission.reserve(req, env.route, amount)
            except BudgetExceeded:
                return
            self.queue.append(env.model_copy(update={"request": req, "reservation_id": rid})
                              .to_message())

        @precondition(lambda self: bool(self.queue))
        @rule(i=st.integers(min_value=0))
        def cancel(self, i: int) -> None:
            msg = self.queue[i % len(self.queue)]
            req = Envelope.model_validate(msg).request
            self.rt.cancels.ids.add(task_id_for(req))

        @rule(feature=st.sampled_from(FEATURES),
              hard=st.integers(min_value=0, max_value=20000).map(lambda n: Decimal(n) / 1_000_000))
        def change_budget(self, feature: str, hard: Decimal) -> None:
            with sessions() as s:
                set_budget(s, "feature", feature, "total", hard=hard)
                s.commit()
            self.peak[feature] = max(self.peak[feature], hard)
            self.admission.invalidate()

        @rule(seconds=st.sampled_from([30, 600, 3600]))
        def leases_run_out(self, seconds: int) -> None:
            """Time passes: the governor expires the leases of runs that never came back."""
            self.now += timedelta(seconds=seconds)
            with sessions() as s:
                governor.release_expired(s, self.now + timedelta(seconds=3600))
                s.commit()

        @invariant()
        def spend_and_commitments_never_pass_a_hard_limit(self) -> None:
            with sessions() as s:
                for b in s.scalars(select(BudgetRow)):
                    assert b.spent + b.reserved <= self.peak[b.key], (
                        b.key, b.spent, b.reserved, self.peak[b.key])

        @invariant()
        def every_call_is_one_attempt_and_rows_cost_their_attempts(self) -> None:
            with sessions() as s:
                counts = dict(s.execute(select(AttemptRow.request_id, func.count())
                                        .group_by(AttemptRow.request_id)).all())
                for rid, n in self.openai.calls.items():
                    assert counts.get(rid, 0) == n, (rid, counts.get(rid), n)
                for row in s.scalars(select(LedgerRow).where(LedgerRow.outcome != "running")):
                    total = s.scalar(select(func.coalesce(func.sum(AttemptRow.cost), 0))
                                     .where(AttemptRow.request_id == row.request_id))
                    assert row.cost == Decimal(total), row.request_id

        @invariant()
        def each_attempt_is_charged_by_what_is_known_of_its_bill(self) -> None:
            with sessions() as s:
                for a in s.scalars(select(AttemptRow).where(AttemptRow.outcome != "sent")):
                    if a.outcome in ("timeout", "unparseable", "lost"):  # blind: worst case
                        assert a.billing == "estimated" and a.cost == a.worst_case > 0, a.id
                    elif a.outcome == "refused":  # an error status: not billed
                        assert (a.billing, a.cost) == ("none", 0), a.id
                    else:
                        assert a.outcome == "ok" and a.billing == "exact" and a.cost > 0, a.id

        @invariant()
        def finished_requests_hold_no_reservation(self) -> None:
            # By request id and tenant: another team's request under the same id (refused by
            # its worker, or not yet delivered) holds a reservation of its own.
            with sessions() as s:
                done = {(rid, f"{org}/{team}") for rid, org, team in s.execute(
                    select(LedgerRow.request_id, LedgerRow.org, LedgerRow.team)
                    .where(LedgerRow.outcome != "running"))}
                # A retry submitted after its request finished holds money until a worker
                # reaches its message (and releases it): only while the message waits.
                waiting = {m.get("reservation_id") for m in self.queue}
                held = {(rid, owner) for res, rid, owner in s.execute(
                    select(ReservationRow.id, ReservationRow.request_id, ReservationRow.owner)
                    .where(ReservationRow.state == "open")) if res not in waiting}
                assert not (done & held), done & held

        @invariant()
        def settled_spend_is_the_settled_attempts(self) -> None:
            # Per attempt, not per row: a request retried after an error is ``running`` again
            # while its first run's charges stay settled.
            with sessions() as s:
                for f in FEATURES:
                    spent = s.scalar(select(BudgetRow.spent).where(BudgetRow.key == f))
                    settled = s.scalar(select(func.coalesce(func.sum(AttemptRow.cost), 0))
                                       .where(AttemptRow.feature == f,
                                              AttemptRow.settled.is_(True)))
                    assert spent == Decimal(settled), (f, spent, settled)

    return MoneyMachine


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_interleaving_leaks_spend_or_an_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    run_state_machine_as_test(machine_for(url, tmp_path),
                              settings=settings(max_examples=60, stateful_step_count=25,
                                                deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow]))


def test_a_dead_runs_reservation_is_not_freed_while_its_attempts_are_unsettled(
        tmp_path: Path) -> None:
    """Killed mid-call after a billed timeout; its lease runs out; the governor must not free
    the money (others would reserve it, and the takeover's charges would then pass the limit).
    """
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    machine = machine_for(url, tmp_path)()
    try:
        machine.submit(feature="f1", model="gpt-4o", lane="interactive", max_tokens=400)
        (dead,) = machine.queue
        machine.deliver(i=0, script=["timeout", "kill"], keep=True)
        machine.leases_run_out(seconds=3600)
        for _ in range(3):  # others try to take the room
            machine.submit(feature="f1", model="gpt-4o", lane="interactive", max_tokens=400)
        assert machine.queue == [dead]  # nothing else fitted: the dead run still holds it
        machine.deliver(i=0, script=[], keep=False)  # the takeover
        machine.spend_and_commitments_never_pass_a_hard_limit()
        machine.every_call_is_one_attempt_and_rows_cost_their_attempts()
        machine.finished_requests_hold_no_reservation()
        machine.settled_spend_is_the_settled_attempts()
    finally:
        machine.teardown()
