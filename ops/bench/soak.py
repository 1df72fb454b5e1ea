"""Soak: N requests on both lanes while the worker is ``kill -9``-ed every K s; counts must hold."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ops.bench.harness import bench_env, scratch_database, standin_process
from ops.bench.procs import kill9, start_worker, stop

#: Redis redelivers a killed worker's unacked tasks after this; it outlasts the lane limits.
VISIBILITY_S = 8


def soak_env(db_url: str, standin_url: str, home: Path) -> dict[str, str]:
    """The benchmark environment with short leases, so killed work comes back in seconds."""
    return {**bench_env(db_url, standin_url), "SLUICE_HOME": str(home),
            "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "SLUICE_LANES__INTERACTIVE__SOFT_TIME_LIMIT_S": "4",
            "SLUICE_LANES__INTERACTIVE__TIME_LIMIT_S": "5",
            "SLUICE_LANES__ASYNC__SOFT_TIME_LIMIT_S": "4",
            "SLUICE_LANES__ASYNC__TIME_LIMIT_S": "5",
            "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "0",
            "SLUICE_BROKER__RESEND_AFTER_S": str(RESEND_AFTER_S)}


#: The soak's stand-in for `celery beat`: how often the in-flight sweep runs, and its age limit.
SWEEP_EVERY_S = 5.0
RESEND_AFTER_S = 20.0


class Sweeper(threading.Thread):
    """Runs the in-flight sweep (the beat job `sluice.inflight.sweep`) while the soak runs."""

    def __init__(self, gateway: Any, sessions: Any) -> None:
        super().__init__(daemon=True, name="soak-sweeper")
        self.gateway, self.sessions = gateway, sessions
        self.halt = threading.Event()
        self.resent = 0

    def run(self) -> None:
        from queues.inflight import sweep_once

        while not self.halt.wait(SWEEP_EVERY_S):
            try:
                counts = sweep_once(self.gateway.inflight, self.gateway.app, self.sessions,
                                    older_than_s=RESEND_AFTER_S)
                self.resent += counts["resent"]
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next one
                continue


class Killer(threading.Thread):
    """Kills the current worker every ``every`` seconds and starts a fresh one."""

    def __init__(self, env: dict[str, str], log: Path, every: float) -> None:
        super().__init__(daemon=True, name="soak-killer")
        self.env, self.log, self.every = env, log, every
        self.proc = start_worker(env, log)
        self.kills = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            kill9(self.proc)
            self.kills += 1
            self.proc = start_worker(self.env, self.log)


def run(n: int, kill_every: float, rate: float, wait_s: float) -> dict[str, int]:
    """Run the soak and return its counts."""
    from models.db.budgets import ReservationRow, set_budget
    from models.db.engine import make_engine, session_factory
    from models.db.tables import LedgerRow
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from queues.producer import connect

    home = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    with scratch_database() as db_url, standin_process() as standin_url:
        env = soak_env(db_url, standin_url, home)
        engine = make_engine(db_url)
        sessions = session_factory(engine)
        team, prefix = f"soak{uuid.uuid4().hex[:6]}", f"soak-{uuid.uuid4().hex[:6]}-"
        with sessions() as s:  # a budget, so every request holds a reservation to settle
            set_budget(s, "team", team, "total", hard=Decimal("100000"))
            s.commit()
        killer = Killer(env, home / "worker.log", kill_every)
        killer.start()
        gateway = connect(load_settings(dict(env)))
        sweeper = Sweeper(gateway, sessions)
        sweeper.start()
        handles: list[Any] = []
        failed = 0
        codes: Counter[str] = Counter()
        try:
            t0 = time.time()
            for i in range(n):  # paced, so the kills land while requests flow
                time.sleep(max(0.0, t0 + i / rate - time.time()))
                try:
                    handles.append(gateway.submit({
                        "request_id": f"{prefix}{i}", "team": team, "feature": "soak",
                        "lane": "interactive" if i % 2 else "async", "model": "cheap",
                        "max_tokens": 16, "cache": {"mode": "bypass"},
                        "messages": [{"role": "user", "content": f"Rephrase item {i}"}]}))
                except SluiceError as err:
                    failed += 1  # refused up front with a typed error: ended, not lost
                    codes[err.code] += 1
            # Kills stop with the last send: the last worker drains what is left.
            killer.halt.set()
            killer.join(timeout=120)
            completed, no_result = 0, []
            deadline = time.time() + wait_s
            for h in handles:
                try:
                    h.result(timeout=max(1.0, deadline - time.time()))
                    completed += 1
                except SluiceError as err:
                    if err.code == "result_timeout":
                        no_result.append(h.request_id)
                    else:
                        failed += 1
                        codes[err.code] += 1
        finally:
            killer.halt.set()
            killer.join(timeout=120)
            sweeper.halt.set()
            sweeper.join(timeout=30)
            gateway.close()
            stop(killer.proc)
        with sessions() as s:
            outcome = dict(s.execute(select(LedgerRow.request_id, LedgerRow.outcome)
                                     .where(LedgerRow.request_id.in_(no_result or [""]))).all())
            per_id = dict(s.execute(select(LedgerRow.request_id, func.count())
                                    .where(LedgerRow.request_id.startswith(prefix))
                                    .group_by(LedgerRow.request_id)).all())
            settles = dict(s.execute(select(ReservationRow.request_id, func.count())
                                     .where(ReservationRow.request_id.startswith(prefix),
                                            ReservationRow.state == "settled")
                                     .group_by(ReservationRow.request_id)).all())
            still_open = s.execute(select(func.count()).select_from(ReservationRow).where(
                ReservationRow.request_id.startswith(prefix),
                ReservationRow.state == "open")).scalar_one()
        engine.dispose()
    return {"sent": n, "queued": len(handles), "completed": completed, "failed": failed,
            # Timed out waiting, yet the ledger says how it ended (or that a claim is stuck).
            **{f"no_result_ledger_{o}": sum(1 for r in no_result if outcome.get(r) == o)
               for o in sorted(set(outcome.values()))},
            "lost": sum(1 for r in no_result if r not in per_id),
            "billed_twice": sum(1 for c in per_id.values() if c > 1)
            + sum(1 for c in settles.values() if c > 1),
            "reservations_open": int(still_open), "kills": killer.kills,
            "resent_by_sweeper": sweeper.resent,
            **{f"failed_{code}": k for code, k in sorted(codes.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.soak", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="requests to send")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between kills")
    parser.add_argument("--rate", type=float, default=40.0, help="requests sent per second")
    parser.add_argument("--wait", type=float, default=180.0,
                        help="seconds to wait for results after the last send")
    args = parser.parse_args(argv)
    counts = run(args.n, args.kill_every, args.rate, args.wait)
    for key, value in counts.items():
        print(f"{key:>26}: {value}")
    bad = counts["lost"] or counts["billed_twice"]
    print("FAIL: requests lost or billed twice" if bad
          else "OK: nothing lost, nothing billed twice")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
