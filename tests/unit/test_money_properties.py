"""A stateful property over the worker's money path: no interleaving leaks spend or an attempt.

The real ``execute`` (claim, second check, attempts, retries, fallbacks, settlement) runs on
the embedded SQLite ledger with real admission, against a scripted provider. Hypothesis
interleaves submits, deliveries whose attempts succeed, fail unbilled (5xx), time out (billed
unknown), return garbage, or die with their worker mid-call; redeliveries, cancels, budget
changes and the governor's lease expiry; and async requests sent to a provider Batch API whose
batch is slower than the task waits (the task comes back to poll it), answers later, or is
cancelled at the provider once its caller cancels. After every step: no budget's settled spend
plus what it holds passes the largest hard limit it has had, every provider call is exactly one
attempt row (a batch one however many visits it takes), a batch is billed once and only if it
answered, each request's row costs the sum of its attempts, and finished requests hold no open
reservation. At the end every batch answers and every message is delivered: no reservation is
left open.
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
from concurrent.futures import Future
from sqlalchemy import func, select, text

from models.db.attempts import AttemptRow
from models.db.budgets import BudgetRow, ReservationRow, set_budget
from models.db.engine import make_engine, session_factory
from models.db.tables import LedgerRow
from models.domain.cost import cost_of
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
from workers.batch.base import reply_extra
from workers.batch.placements import Placement
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
    """Cancel marks in memory (queues.cancel's interface, and the door's batch-cancel keys)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.client, self.key_prefix = self, ""

    def marked(self, task_id: str) -> bool:
        return task_id in self.ids

    def state(self, task_id: str) -> str | None:
        return "cancelled" if task_id in self.ids else None

    def exists(self, *_keys: str) -> int:  # no cancel asked through the door's own key
        return 0


class Batches:
    """A provider Batch API with its collector (workers/batch/seam.py's interface), one request
    per batch: a batch runs until a rule answers it, or until its caller's cancel reaches it."""

    def __init__(self) -> None:
        self.placed: dict[str, Placement] = {}  # task id -> its batch
        self.state: dict[str, str] = {}  # batch id -> running | answered | cancelled
        self.bill: dict[str, Decimal] = {}  # request id -> what the provider billed
        self.request_of: dict[str, str] = {}  # batch id -> request id
        self.replies: dict[str, ProviderReply] = {}

    def placement(self, key: str | None) -> Placement | None:
        return self.placed.get(key or "")

    def submit(self, call: ProviderCall, key: str | None = None) -> Future[ProviderReply]:
        assert key is not None
        placed = self.placed.get(key)
        if placed is None:  # a new provider batch: one provider call, billed if it answers
            bid = f"batch-{len(self.placed)}"
            placed = self.placed[key] = Placement("openai", call.model.name, bid, "r0", size=1)
            self.state[bid], self.request_of[bid] = "running", call.request.request_id
            usage = Usage(input_uncached=call.request.max_tokens,
                          output=call.request.max_tokens // 3)
            self.replies[bid] = ProviderReply(text="batched", usage=usage,
                                              extra=reply_extra(bid))
        future: Future[ProviderReply] = Future()
        state = self.state[placed.batch_id]
        if state == "answered":
            future.set_result(self.replies[placed.batch_id])
        elif state == "cancelled":
            future.set_exception(ProviderRetryable("batch cancelled before answering it",
                                                   provider="openai"))
        return future  # running: the task's wait times out (BatchPending)

    def cancel(self, placed: Placement) -> bool:
        if self.state[placed.batch_id] == "running":  # answered ones stay billed
            self.state[placed.batch_id] = "cancelled"
        return True

    def answer(self, bid: str, catalogue: Any) -> None:
        self.state[bid] = "answered"
        reply = self.replies[bid]
        model = catalogue.get(next(p.model for p in self.placed.values() if p.batch_id == bid))
        self.bill[self.request_of[bid]] = cost_of(reply.usage, model, batch=True)


def machine_for(url: str, home: Path) -> type[RuleBasedStateMachine]:
    cfg = load_settings({"SLUICE_DATABASE__URL": url, "SLUICE_HOME": str(home),
                         "SLUICE_PROVIDERS__BACKOFF_BASE_S": "0",
                         "SLUICE_PROVIDERS__MAX_ATTEMPTS": "2",
                         "SLUICE_BATCH__MAX_WAIT_S": "0.001",
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
            self.batches = Batches()
            self.rt._batch_collector = self.batches  # type: ignore[attr-defined]
            self.queue: list[dict[str, Any]] = []  # messages a worker may still (re)deliver
            self.finished: set[str] = set()
            self.now = datetime.now(timezone.utc)

        def teardown(self) -> None:
            try:
                self.drained_leave_no_reservation_open()
            finally:
                self.admission.close()

        def drained_leave_no_reservation_open(self) -> None:
            """Every batch answers and every message is delivered: nothing stays held."""
            for _ in range(6):
                for bid, state in list(self.batches.state.items()):
                    if state == "running":
                        self.batches.answer(bid, self.rt.catalogue)
                for msg in list(self.queue):
                    self.deliver(self.queue.index(msg), [], keep=False)
                if not self.queue:
                    break
            assert not self.queue, [m["request"]["request_id"] for m in self.queue]
            self.every_call_is_one_attempt_and_rows_cost_their_attempts()
            self.a_batch_is_billed_once_and_only_if_it_answered()
            with sessions() as s:
                still = list(s.scalars(select(ReservationRow.request_id)
                                       .where(ReservationRow.state == "open")))
                running = list(s.scalars(select(LedgerRow.request_id)
                                         .where(LedgerRow.outcome == "running")))
            assert not still and not running, (still, running)

        @rule(feature=st.sampled_from(FEATURES), model=st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
              lane=st.sampled_from(["interactive", "async"]),
              max_tokens=st.integers(min_value=10, max_value=400), batch=st.booleans())
        def submit(self, feature: str, model: str, lane: str, max_tokens: int,
                   batch: bool = False) -> None:
            # ``batch``: an async request opted into the provider's Batch API.
            tags = {"batch": "true"} if batch and lane == "async" else {}
            req = parse_request({"request_id": uuid.uuid4().hex, "team": "t", "feature": feature,
                                 "lane": lane, "model": model, "max_tokens": max_tokens,
                                 "tags": tags,
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

        @rule(feature=st.sampled_from(FEATURES), model=st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
              max_tokens=st.integers(min_value=10, max_value=400))
        def submit_to_a_batch(self, feature: str, model: str, max_tokens: int) -> None:
            """An async request opted into the Batch API (as likely as any other submit)."""
            self.submit(feature, model, "async", max_tokens, batch=True)

        @precondition(lambda self: bool(self.queue))
        @rule(i=st.integers(min_value=0), script=st.lists(st.sampled_from(OUTCOMES), max_size=4),
              keep=st.booleans(), stale=st.booleans())
        def deliver(self, i: int, script: list[str], keep: bool, stale: bool = True) -> None:
            """A worker runs the message; ``keep``: it stays queued (a redelivery may follow);
            ``stale``: a claim left running is past its lease (else it is live: a task back
            to poll its batch polls it, any other waits)."""
            msg = self.queue[i % len(self.queue)]
            self.openai.script = list(script)
            self.rt._heartbeat.claim_ttl_s = 0.0 if stale else 1e9
            req = Envelope.model_validate(msg).request
            placed = self.batches.placement(task_id_for(req))
            # A poll of a running batch whose caller cancelled must cancel it at the provider.
            cancelling = (placed is not None and task_id_for(req) in self.rt.cancels.ids
                          and self.batches.state[placed.batch_id] == "running")
            try:
                reply = execute(msg, self.rt)
            except WorkerKilled:
                return  # died mid-call: the message comes back
            finally:
                self.openai.script = []
            if cancelling and (reply.get("error") or {}).get("code") != "claim_busy":
                assert self.batches.state[placed.batch_id] == "cancelled", req.request_id
            rid = msg["request"]["request_id"]
            error = reply.get("error") or {}
            if error.get("code") == "batch_pending":
                # Still in its provider batch: the task comes back to poll it, carrying the
                # reservation the reply names (workers/tasks.py).
                held = (error.get("details") or {}).get("reservation_id")
                self.queue[self.queue.index(msg)] = {**msg, "reservation_id": held}
                return
            if error.get("code") == "claim_busy":
                return  # Celery brings it back once the claim could have lapsed
            self.finished.add(rid)
            if not keep:
                self.queue.remove(msg)

        @precondition(lambda self: "running" in self.batches.state.values())
        @rule(i=st.integers(min_value=0))
        def batch_answers(self, i: int) -> None:
            """A provider batch, slower than the task waits, ends: its answer is billed."""
            running = [b for b, state in self.batches.state.items() if state == "running"]
            self.batches.answer(running[i % len(running)], self.rt.catalogue)

        @precondition(lambda self: bool(self.queue))
        @rule(i=st.integers(min_value=0), team=st.sampled_from(["t", "t2"]))
        def resubmit(self, i: int, team: str) -> None:
            """A retry under the same request id (``t``), or another team reusing it (``t2``)."""
            env = Envelope.model_validate(self.queue[i % len(self.queue)])
            req = env.request.model_copy(update={"team": team})
            from models.domain.charges import reach_worst_case, reachable
            amount = reach_worst_case(PromptCount(tokens=env.prompt_tokens), req.max_tokens,
                                      reachable(self.rt.catalogue, cfg.providers.fallbacks,
                                                env.route.model))
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
                # Direct calls here; a batch's one attempt in the batch invariant.
                counts = dict(s.execute(select(AttemptRow.request_id, func.count())
                                        .where(AttemptRow.batch.is_(False))
                                        .group_by(AttemptRow.request_id)).all())
                for rid, n in self.openai.calls.items():
                    assert counts.get(rid, 0) == n, (rid, counts.get(rid), n)
                for row in s.scalars(select(LedgerRow).where(LedgerRow.outcome != "running")):
                    total = s.scalar(select(func.coalesce(func.sum(AttemptRow.cost), 0))
                                     .where(AttemptRow.request_id == row.request_id))
                    assert row.cost == Decimal(total), row.request_id

        @invariant()
        def a_batch_is_billed_once_and_only_if_it_answered(self) -> None:
            """One provider batch per request; its attempt is one row whatever the visits, never
            charged as lost; billed its answer once, else nothing; a cancelled caller's batch
            that had not answered was cancelled at the provider."""
            with sessions() as s:
                for placed in self.batches.placed.values():
                    rid = self.batches.request_of[placed.batch_id]
                    rows = list(s.scalars(select(AttemptRow).where(
                        AttemptRow.request_id == rid, AttemptRow.batch.is_(True))))
                    assert rows, rid
                    assert all(a.outcome in ("sent", "pending", "ok", "cancelled", "refused")
                               for a in rows), [(a.outcome, a.cost) for a in rows]
                    billed = [a for a in rows if a.cost > 0]
                    assert len(billed) <= 1, [(a.outcome, a.cost) for a in rows]
                    if billed:
                        assert billed[0].outcome == "ok" and billed[0].cost == \
                            self.batches.bill[rid], (rid, billed[0].cost, self.batches.bill)
                    row = s.get(LedgerRow, rid)
                    if row is not None and row.error_code == "cancelled" and any(
                            a.outcome == "cancelled" for a in rows):
                        assert self.batches.state[placed.batch_id] == "cancelled", rid

        @invariant()
        def each_attempt_is_charged_by_what_is_known_of_its_bill(self) -> None:
            with sessions() as s:
                for a in s.scalars(select(AttemptRow).where(
                        AttemptRow.outcome.not_in(("sent", "pending")))):
                    if a.outcome in ("timeout", "unparseable", "lost"):  # blind: worst case
                        assert a.billing == "estimated" and a.cost == a.worst_case > 0, a.id
                    elif a.outcome in ("refused", "cancelled"):  # an error status, a batch
                        # cancelled before it answered: not billed
                        assert a.cost == 0, a.id
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
