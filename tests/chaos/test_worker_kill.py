"""A worker killed with ``kill -9`` mid-run: every request ends once, one ledger row each."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db.budgets import ReservationRow, set_budget
from models.db.tables import LedgerRow
from models.domain.errors import SluiceError
from models.domain.settings import load_settings
from queues.producer import connect
from tests.chaos.support import kill9, ledger_counts, replacement_worker, start_worker, stop

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
N = int(os.environ.get("SLUICE_CHAOS_N", "200"))


def test_kill_minus_9_mid_run_loses_nothing_and_bills_once(
        chaos_env: dict[str, str], chaos_sessions: Any, standin: Any, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    team, prefix = f"chaos{token}", f"kill-{token}-"
    with chaos_sessions() as s:  # a budget, so every request holds a reservation to settle
        set_budget(s, "team", team, "total", hard=Decimal("1000"))
        s.commit()
    log = tmp_path / "worker.log"
    first = start_worker(chaos_env, log)
    gateway = connect(load_settings(dict(chaos_env)))
    try:
        handles = [gateway.submit({
            "request_id": f"{prefix}{i}", "team": team, "feature": "chaos",
            "lane": "interactive" if i % 2 else "async", "model": "cheap", "max_tokens": 16,
            "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"Rephrase item {i}"}]}) for i in range(N)]
        deadline = time.time() + 120
        while ledger_counts(chaos_sessions, prefix).get("ok", 0) < N // 3:
            assert time.time() < deadline, "the first worker made no progress"
            time.sleep(0.05)
        kill9(first)  # mid-run: some tasks running, some prefetched, most still queued
        with replacement_worker(chaos_env, log, gateway, chaos_sessions, older_than_s=15):
            outcomes: dict[str, Any] = {}
            for h in handles:
                try:
                    outcomes[h.request_id] = h.result(timeout=90)
                except SluiceError as err:  # a clear, typed end is fine; silence is not
                    outcomes[h.request_id] = err
            # A run killed after answering but before billing left its claim running: the
            # redelivery (kombu's restore, or the sweeper) takes it over and bills the answer
            # it stashed; allow the last of those a moment to land.
            settle_by = time.time() + 60
            while ledger_counts(chaos_sessions, prefix).get("running", 0) \
                    and time.time() < settle_by:
                time.sleep(0.2)
    finally:
        gateway.close()
        stop(first)
    ok = {rid: r for rid, r in outcomes.items() if not isinstance(r, SluiceError)}
    errors = {rid: e for rid, e in outcomes.items() if isinstance(e, SluiceError)}
    assert len(outcomes) == N, "some requests never ended"
    assert len(ok) >= N * 0.98, f"too many errors: {list(errors.values())[:3]}"
    counts = ledger_counts(chaos_sessions, prefix)
    if counts.get("running", 0):
        with chaos_sessions() as s:
            stuck = s.scalars(select(LedgerRow.request_id).where(
                LedgerRow.request_id.startswith(prefix), LedgerRow.outcome == "running")).all()
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if any(f"{rid}~" in ln for rid in stuck)]
        raise AssertionError(f"claims left running: {counts}; their handles ended with "
                             f"{[outcomes.get(r) for r in stuck]!r}; worker log:\n"
                             + "\n".join(lines[-40:]))
    with chaos_sessions() as s:
        rows = s.execute(select(LedgerRow.request_id, LedgerRow.outcome, LedgerRow.cost)
                         .where(LedgerRow.request_id.startswith(prefix))).all()
        open_left = s.execute(select(ReservationRow.request_id, ReservationRow.expires_at,
                                     ReservationRow.created_at).where(
            ReservationRow.request_id.startswith(prefix), ReservationRow.state == "open")).all()
    by_id = {rid: (outcome, cost) for rid, outcome, cost in rows}
    assert len(rows) == len(by_id)  # one row per request id
    for rid, result in ok.items():  # each answered request billed exactly what it returned
        assert by_id[rid] == ("ok", result.cost), rid
    assert not open_left, f"reservations still open after the run: {open_left} " \
        f"{[by_id.get(r[0]) for r in open_left]} {[outcomes.get(r[0]) for r in open_left]}"
    assert datetime.now(timezone.utc)  # the run finished within the test's bounded time
