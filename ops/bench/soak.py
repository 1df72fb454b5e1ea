"""Soak: N requests on both lanes while the worker (or the broker) is ``kill -9``-ed every K s."""

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
from ops.bench import soak_weather as weather
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

        if self.gateway.inflight is None:
            return  # RabbitMQ requeues what a dead consumer held: nothing to sweep
        while not self.halt.wait(SWEEP_EVERY_S):
            try:
                counts = sweep_once(self.gateway.inflight, self.gateway.app, self.sessions,
                                    older_than_s=RESEND_AFTER_S)
                self.resent += counts["resent"]
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next one
                continue


class Killer(threading.Thread):
    """Kills the current worker every ``every`` seconds and starts a fresh one."""

    def __init__(self, env: dict[str, str], log: Path, every: float,
                 concurrency: int = 8) -> None:
        super().__init__(daemon=True, name="soak-killer")
        self.env, self.log, self.every = env, log, every
        self.concurrency = concurrency
        self.proc: Any = None
        self.kills = 0
        self.halt = threading.Event()

    def start(self) -> None:
        self.proc = start_worker(self.env, self.log, concurrency=self.concurrency)
        super().start()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            kill9(self.proc)
            self.kills += 1
            self.proc = start_worker(self.env, self.log, concurrency=self.concurrency)


def run(n: int, kill_every: float, rate: float, wait_s: float,
        modes: tuple[str, ...] = ("plain",), limit_share: float = 0.3) -> dict[str, int]:
    """Run the soak with worker kills (and the bad weather of ``modes``); return its counts."""
    home = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    with scratch_database() as db_url, \
            standin_process(batch_delay_s=weather.BATCH_DELAY_S) as standin_url:
        env = {**soak_env(db_url, standin_url, home), **weather.weather_env(modes)}
        weather.script_faults(standin_url, n, modes)
        # Slow calls and batch polls hold a thread each while they wait: more threads.
        killer = Killer(env, home / "worker.log", kill_every,
                        concurrency=weather.CONCURRENCY if set(modes) - {"plain"} else 8)
        counts = drive(env, db_url, n, rate, wait_s, start=killer.start,
                       stop_faults=lambda: _halt(killer), worker=lambda: killer.proc,
                       modes=modes, limit_share=limit_share)
    return {**counts, "kills": killer.kills}


def _halt(thread: Any) -> None:
    thread.halt.set()
    if thread.is_alive():
        thread.join(timeout=180)


class Restarter(threading.Thread):
    """``kill -9``s the broker every ``every`` seconds and starts it again on its data."""

    def __init__(self, broker: Any, every: float) -> None:
        super().__init__(daemon=True, name="soak-broker-restarter")
        self.broker, self.every = broker, every
        self.halt = threading.Event()
        self.down_s: list[float] = []

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.down_s.append(self.broker.restart())


def run_broker_restarts(kind: str, n: int, every: float, rate: float, wait_s: float
                        ) -> dict[str, Any]:
    """The soak with the broker ``kill -9``-ed and restarted every ``every`` s (one worker, never
    killed); after the run the result store's Redis is killed once more, and the answers are
    read back from it: what a client polling its jobs would still find."""
    from ops.bench.brokers import AofRedis, RabbitNode

    home = Path(tempfile.mkdtemp(prefix=f"sluice-soak-{kind}-"))
    # Results (and, on RabbitMQ, the side state) on a durable Redis of the benchmark's own.
    store = AofRedis()
    broker = store if kind == "redis" else RabbitNode()
    store.start()
    if broker is not store:
        broker.start()
    try:
        with scratch_database() as db_url, standin_process() as standin_url:
            env = {**soak_env(db_url, standin_url, home),
                   **bench_redis(store.url), "SLUICE_BROKER__URL": broker.url}
            worker: dict[str, Any] = {}
            restarter = Restarter(broker, every)

            def begin() -> None:
                worker["proc"] = start_worker(env, home / "worker.log")
                restarter.start()

            counts = drive(env, db_url, n, rate, wait_s, start=begin,
                           stop_faults=lambda: _halt(restarter),
                           worker=lambda: worker.get("proc"), reread=store)
    finally:
        broker.close()
        if broker is not store:
            store.close()
    return {"broker": kind, **counts, "broker_restarts": broker.restarts,
            "broker_down_s_max": round(max(restarter.down_s, default=0.0), 1)}


def bench_redis(url: str) -> dict[str, str]:
    """Result store and response cache on ``url`` (the broker too, unless overridden)."""
    return {"SLUICE_BROKER__URL": url, "SLUICE_BROKER__RESULT_BACKEND": url,
            "SLUICE_CACHE__REDIS_URL": url}


def drive(env: dict[str, str], db_url: str, n: int, rate: float, wait_s: float, *,
          start: Any, stop_faults: Any, worker: Any, reread: Any = None,
          modes: tuple[str, ...] = ("plain",), limit_share: float = 0.3) -> dict[str, Any]:
    """Send ``n`` paced requests on both lanes while faults run, wait for every answer, and
    count from the ledger what was lost, billed twice or spent past a hard limit."""
    from models.db.budgets import set_budget
    from models.db.engine import make_engine, session_factory
    from models.domain.errors import SluiceError
    from models.domain.settings import load_settings
    from queues.producer import connect

    engine = make_engine(db_url)
    sessions = session_factory(engine)
    team, prefix = f"soak{uuid.uuid4().hex[:6]}", f"soak-{uuid.uuid4().hex[:6]}-"
    if set(modes) - {"plain"}:  # limits that bind mid-run
        weather.set_limits(sessions, team, n, modes, limit_share)
    else:
        with sessions() as s:  # a budget, so every request holds a reservation to settle
            set_budget(s, "team", team, "total", hard=Decimal("100000"))
            s.commit()
    start()
    gateway = connect(load_settings(dict(env)))
    sweeper = Sweeper(gateway, sessions)
    sweeper.start()
    watch = weather.Watch(sessions, prefix)
    watch.start()
    handles: list[Any] = []
    done: list[Any] = []
    failed = 0
    codes: Counter[str] = Counter()
    no_result: list[str] = []
    try:
        t0 = time.time()
        for i in range(n):  # paced, so the faults land while requests flow
            time.sleep(max(0.0, t0 + i / rate - time.time()))
            try:
                handles.append(gateway.submit(weather.request_for(i, modes, prefix, team)))
            except SluiceError as err:
                failed += 1  # refused up front with a typed error: ended, not lost
                codes[err.code] += 1
        stop_faults()  # faults stop with the last send: what is left drains
        deadline = time.time() + wait_s
        for h in handles:
            try:
                h.result(timeout=max(1.0, deadline - time.time()))
                done.append(h)
            except SluiceError as err:
                if err.code == "result_timeout":
                    no_result.append(h.request_id)
                else:
                    failed += 1
                    codes[err.code] += 1
            except Exception as exc:  # noqa: BLE001 - a task that crashed (not our typed
                # error): it ended, and the caller was told; counted by its kind
                failed += 1
                codes[f"crashed_{type(exc).__name__}"] += 1
        readable = _reread(reread, gateway, done, team) if reread is not None else None
    finally:
        stop_faults()
        sweeper.halt.set()
        sweeper.join(timeout=30)
        watch.halt.set()
        watch.join(timeout=30)
        gateway.close()
        proc = worker()
        if proc is not None:
            stop(proc)
    counts = _ledger_counts(sessions, prefix, no_result)
    seen = weather.evidence(sessions, prefix, watch)
    engine.dispose()
    out: dict[str, Any] = {"sent": n, "queued": len(handles), "completed": len(done),
                           "failed": failed, **counts, "resent_by_sweeper": sweeper.resent,
                           **{f"failed_{code}": k for code, k in sorted(codes.items())},
                           **seen}
    if readable is not None:
        out["results_readable_after_restart"] = readable[0]
        out["async_jobs"], out["jobs_readable_after_restart"] = readable[1], readable[2]
    return out


def _reread(store: Any, gateway: Any, done: list[Any], team: str) -> tuple[int, int, int]:
    """Record each async answer as the front door records a job, kill the result store's
    Redis once more, start it on its AOF, and count what a client could still read: answers
    of ``done``, and async jobs whose record and answer are both there (``/v1/jobs/{id}``)."""
    import asyncio

    from queues.http.jobs import build_jobs

    jobs = [h for h in done if h.request_id.rsplit("-", 1)[1].isdigit()
            and int(h.request_id.rsplit("-", 1)[1]) % 2 == 0]  # even: the async lane

    async def put_all() -> None:
        book = build_jobs(gateway.settings)
        for h in jobs:
            await book.put(h.task_id, {"team": team, "org": None})
        await book.close()

    async def present() -> set[str]:
        book = build_jobs(gateway.settings)
        found = {h.task_id for h in jobs if await book.get(h.task_id) is not None}
        await book.close()
        return found

    asyncio.run(put_all())
    store.restart(down_s=0.5)
    backend = gateway.app.backend
    answered: set[str] = set()
    for h in done:
        for _ in range(20):  # the client reconnects on the first commands after the restart
            try:
                meta = backend.get_task_meta(h.task_id)
                break
            except Exception:  # noqa: BLE001 - reconnecting
                time.sleep(0.25)
        else:
            continue
        if meta.get("status") == "SUCCESS":
            answered.add(h.task_id)
    records = present_with_retries(present)
    return len(answered), len(jobs), len(records & answered)


def present_with_retries(read: Any) -> set[str]:
    """``read()`` once the store answers again."""
    import asyncio

    for _ in range(20):
        try:
            return set(asyncio.run(read()))
        except Exception:  # noqa: BLE001 - reconnecting
            time.sleep(0.25)
    return set()


def _ledger_counts(sessions: Any, prefix: str, no_result: list[str]) -> dict[str, int]:
    from models.db.budgets import ReservationRow
    from models.db.tables import LedgerRow

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
    twice = sorted(r for r, c in settles.items() if c > 1)
    if twice:  # what happened to them, for whoever reads the run
        weather.explain(sessions, twice[:5])
    # Timed out waiting, yet the ledger says how it ended (or that a claim is stuck).
    return {**{f"no_result_ledger_{o}": sum(1 for r in no_result if outcome.get(r) == o)
               for o in sorted(set(outcome.values()))},
            "lost": sum(1 for r in no_result if r not in per_id),
            "billed_twice": sum(1 for c in per_id.values() if c > 1)
            + sum(1 for c in settles.values() if c > 1),
            "reservations_open": int(still_open)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.soak", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="requests to send")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between kills")
    parser.add_argument("--rate", type=float, default=40.0, help="requests sent per second")
    parser.add_argument("--wait", type=float, default=180.0,
                        help="seconds to wait for results after the last send")
    parser.add_argument("--broker-restart", default="", metavar="redis,rabbitmq",
                        help="instead of killing workers, kill -9 and restart each named broker "
                             "(one the benchmark starts itself) every --restart-every s")
    parser.add_argument("--restart-every", type=float, default=15.0,
                        help="seconds between broker restarts")
    parser.add_argument("--modes", default=",".join(weather.MODES),
                        help="request kinds, in turn (worker kills only): plain, fallback (the "
                             "cheap model fails, a flagship fallback answers), slow (calls "
                             "longer than their reservation's lease), batch (a provider batch "
                             "slower than the task's wait); with any but plain, hard limits "
                             "bind mid-run")
    parser.add_argument("--limit-share", type=float, default=0.3,
                        help="the team's hard limit, as a share of every request's worst case")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - set(weather.MODES):
        parser.error(f"--modes: choose from {', '.join(weather.MODES)}")
    if args.broker_restart:
        runs = [run_broker_restarts(kind.strip(), args.n, args.restart_every, args.rate,
                                    args.wait) for kind in args.broker_restart.split(",")]
    else:
        runs = [run(args.n, args.kill_every, args.rate, args.wait, modes, args.limit_share)]
    bad = False
    for counts in runs:
        for key, value in counts.items():
            print(f"{key:>30}: {value}")
        readable = counts.get("results_readable_after_restart", counts["completed"])
        jobs_gone = counts.get("jobs_readable_after_restart", 0) < counts.get("async_jobs", 0)
        idle = [] if args.broker_restart else weather.unexercised(counts, modes)
        failed = (counts["lost"] or counts["billed_twice"] or counts["over_limit"]
                  or readable < counts["completed"] or jobs_gone or idle)
        bad = bad or bool(failed)
        print(f"lost {counts['lost']}, billed twice {counts['billed_twice']}, "
              f"over limit {counts['over_limit']}")
        if idle:
            print(f"FAIL: these paths were never taken: {', '.join(idle)}")
        print("FAIL: requests lost, billed twice, over a hard limit or answers gone" if failed
              else "OK: nothing lost, nothing billed twice, no hard limit passed")
        print()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
