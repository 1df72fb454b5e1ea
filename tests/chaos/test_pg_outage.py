"""PostgreSQL away: admission, claims fail closed; a paid answer waits in the outbox, lands once."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.pool import NullPool

from models.db.budgets import ReservationRow, set_budget
from models.db.engine import session_factory
from models.db.tables import LedgerRow
from models.domain.errors import LedgerError
from models.domain.settings import load_settings
from queues.producer import connect
from tests.chaos.support import ThrowawayPostgres, start_worker, stop

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
#: The scripted provider delay: long enough to stop PostgreSQL while the call is in flight.
SLOW_S = 4


def _request(rid: str, team: str) -> dict[str, Any]:
    return {"request_id": rid, "team": team, "feature": "pg-outage", "model": "cheap",
            "max_tokens": 8, "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": f"hello {rid}"}]}


def _calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/chat/completions", 0))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_outage_fails_closed_and_outbox_lands_once(integration_env: dict[str, str],
                                                   standin: Any, tmp_path: Path) -> None:
    pg = ThrowawayPostgres(Path("/tmp") / f"sluice-pg-{uuid.uuid4().hex[:8]}")
    pg.init()
    pg.start()
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "ledger"')
    url = pg.admin_url.rsplit("/", 1)[0] + "/ledger"
    from ops.db import upgrade

    upgrade(url)
    prefix = f"sgpg{uuid.uuid4().hex[:6]}:"  # our own keys: the session worker must not serve us
    home = tmp_path / "home"
    env = {**integration_env, "SLUICE_DATABASE__URL": url, "SLUICE_BROKER__KEY_PREFIX": prefix,
           "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:", "SLUICE_HOME": str(home)}
    settings = load_settings(dict(env))
    # NullPool: each check opens a fresh connection, so the test never trips on a dead one.
    from sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://" + url.removeprefix("postgresql://"),
                           poolclass=NullPool)
    sessions = session_factory(engine)
    token = uuid.uuid4().hex[:8]
    team = f"pg{token}"
    with sessions() as s:  # a budget, so the paid request holds a reservation to settle
        set_budget(s, "team", team, "total", hard=Decimal("100"))
        s.commit()
    worker = start_worker(env, tmp_path / "worker.log", concurrency=4)
    gw = connect(settings)
    bare = connect(settings, admission=None, pauses=None, cache=None, cache_hit_sink=None,
                   limiter=None)

    def row(rid: str) -> Any:
        with sessions() as s:
            return s.execute(select(LedgerRow.outcome, LedgerRow.cost)
                             .where(LedgerRow.request_id == rid)).all()

    try:
        paid = f"pg-{token}-paid"
        standin.script_faults([f"timeout={SLOW_S}"], path="openai", model="gpt-4o-mini")
        before = _calls(standin)
        handle = gw.submit(_request(paid, team))
        # Claimed and at the provider: now the database goes away.
        _wait(lambda: row(paid) == [("running", Decimal(0))] and _calls(standin) > before, 20,
              "the claim and the provider call")
        pg.stop()
        in_flight = _calls(standin)

        t0 = time.time()
        with pytest.raises(LedgerError, match="nothing was dispatched"):  # admission: closed
            gw.submit(_request(f"pg-{token}-admit", team))
        assert time.time() - t0 < 10, "admission hung on the dead database"
        with pytest.raises(LedgerError, match="nothing was sent"):  # so does the worker's claim
            bare.submit(_request(f"pg-{token}-claim", team)).result(timeout=30)

        result = handle.result(timeout=30)  # the provider answered: the caller gets it
        assert _calls(standin) == in_flight, "a request was sent while the ledger was down"

        def kept() -> list[str]:
            if not (home / "outbox.db").exists():
                return []
            try:
                with sqlite3.connect(home / "outbox.db") as db:
                    return [r[0] for r in db.execute("SELECT request_id FROM pending")]
            except sqlite3.Error:  # not created yet
                return []

        # The final ledger write found the database away: the paid row waits in the outbox.
        _wait(lambda: kept() == [paid], 30, "the paid row to wait in the outbox")

        pg.start()
        _wait(lambda: row(paid) == [("ok", result.cost)], 30, "the outbox replay")
        with sessions() as s:
            states = s.execute(select(ReservationRow.state)
                               .where(ReservationRow.request_id == paid)).scalars().all()
        assert states and "open" not in states, states
        _wait(lambda: not sqlite3.connect(home / "outbox.db").execute(
            "SELECT count(*) FROM pending").fetchone()[0], 10, "the outbox to empty")
        assert row(f"pg-{token}-admit") == [] and row(f"pg-{token}-claim") == []
        # Back to normal: a new request is served and billed once.
        again = f"pg-{token}-again"
        for attempt in range(3):
            try:  # the first use of a pooled connection the restart dropped fails (typed)
                assert gw.complete(_request(again, team), timeout=30).text
                break
            except LedgerError:
                assert attempt < 2, "the producer never recovered its database connection"
        assert len(row(again)) == 1 and len(row(paid)) == 1
    finally:
        gw.close()
        bare.close()
        stop(worker)
        engine.dispose()
        try:
            pg.stop()
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(pg.folder, ignore_errors=True)
