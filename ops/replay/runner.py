"""Send a trace through the real pipeline once per lever configuration; read each bill back."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from models.domain.errors import SluiceError
from models.domain.settings import Settings
from ops.replay.levers import LeverConfig, needs_pin, run_settings, shape_request


class ReplayError(SluiceError):
    """The replay cannot run as asked (no worker, no ledger): the message says what to start."""

    code = "replay_failed"


@dataclass
class RunBill:
    """One configuration's run: what was sent, and its bill as the ledger records it."""

    config: LeverConfig
    prefix: str
    sent: int = 0
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    total: Any = None  # models.db.spend.SpendLine over the run's rows
    by_tier: list[Any] = field(default_factory=list)

    @property
    def cost(self) -> Decimal:
        """What the run paid."""
        return self.total.cost if self.total is not None else Decimal(0)


@dataclass
class ReplayOutcome:
    """Every run of one replay, and where its rows are."""

    run_id: str
    mode: str
    ledger_url: str
    requests: int
    runs: list[RunBill] = field(default_factory=list)

    def flagship_bill(self) -> Decimal:
        """The all-flagship bill: the measured no-lever run when there was one, else the
        all-flagship, no-cache baseline the ledger priced for the first run."""
        for run in self.runs:
            if run.config.name == "none" and run.total is not None:
                return run.total.cost
        first = self.runs[0].total if self.runs else None
        return first.baseline_cost if first is not None else Decimal(0)

    def reduction(self, run: RunBill) -> Decimal | None:
        """``1 - run cost / all-flagship bill``, or None without a bill to compare to."""
        ref = self.flagship_bill()
        return None if not ref else 1 - run.cost / ref


Progress = Callable[[LeverConfig, int], Callable[[], None]]


def replay(trace: list[dict[str, Any]], configs: list[LeverConfig], *, live: bool = False,
           home: Path = Path(".sluice/replay"), concurrency: int = 8, timeout_s: float = 120.0,
           progress: Progress | None = None, env: dict[str, str] | None = None) -> ReplayOutcome:
    """Run ``trace`` once per configuration; embedded services unless ``live``.

    ``progress(config, total)`` is called as each run starts and returns the callback to call
    once per finished request.
    """
    from models.domain.settings import load_settings
    from ops.demo import demo_settings

    run_id = uuid.uuid4().hex[:8]
    if live:
        base = load_settings(env)
    else:
        home = home.resolve()
        home.mkdir(parents=True, exist_ok=True)
        base = demo_settings(home, env)
        db = home / "replay-ledger.db"
        for suffix in ("", "-wal", "-shm"):  # each embedded replay starts a fresh ledger
            Path(str(db) + suffix).unlink(missing_ok=True)
        # Embedded means embedded: a Redis cache named in the environment is not used either.
        base = base.model_copy(update={
            "database": base.database.model_copy(update={"url": f"sqlite:///{db}"}),
            "cache": base.cache.model_copy(update={"redis_url": None})})
        from ops.db import upgrade

        upgrade(base.database.url)
    out = ReplayOutcome(run_id=run_id, mode="live" if live else "embedded",
                        ledger_url=base.database.url.split("@")[-1], requests=len(trace))
    with _providers(base, live) as (settings, standin):
        for config in configs:
            if standin is not None:
                standin.reset()  # cold provider caches for every run
            bill = RunBill(config=config, prefix=f"rp-{run_id}-{config.name}-")
            run = run_settings(settings, config,
                               None if live else f"sluice:replay:{run_id}:{config.name}:")
            tick = progress(config, len(trace)) if progress else (lambda: None)
            _run(trace, bill, run, live=live, salt=f"replay {run_id} {config.name}",
                 concurrency=concurrency, timeout_s=timeout_s, tick=tick)
            _read_bill(bill, run)
            out.runs.append(bill)
    return out


@contextmanager
def _providers(settings: Settings, live: bool) -> Iterator[tuple[Settings, Any]]:
    """Embedded runs always use a local stand-in, even when provider keys are set."""
    if live:
        yield settings, None
        return
    from workers.providers.standin import StandIn

    with StandIn() as standin:
        p = settings.providers.model_copy(update={
            "openai_base_url": standin.openai_base_url, "openai_api_key": None,
            "anthropic_base_url": standin.anthropic_base_url, "anthropic_api_key": None})
        yield settings.model_copy(update={"providers": p}), standin


def _run(trace: list[dict[str, Any]], bill: RunBill, settings: Settings, *, live: bool,
         salt: str, concurrency: int, timeout_s: float, tick: Callable[[], None]) -> None:
    from ops.embedded import embedded_worker
    from queues.names import queues_of
    from queues.producer import connect

    started = time.perf_counter()
    with ExitStack() as stack:
        gateway = connect(settings)
        stack.callback(gateway.close)
        if live:
            _need_worker(gateway, settings)
        else:
            stack.enter_context(embedded_worker(gateway.app, queues_of(backend="api"),
                                                concurrency=concurrency))
        window: deque[Any] = deque()
        for index, data in enumerate(trace):
            if len(window) >= concurrency:
                _settle(window.popleft(), bill, timeout_s, tick)
            tier = _routed_tier(gateway, data) if needs_pin(data, bill.config) else None
            request = shape_request(data, bill.config, salt=salt, index=index, tier=tier)
            request["request_id"] = f"{bill.prefix}{index:05d}"
            bill.sent += 1
            try:
                window.append(gateway.submit(request))
            except SluiceError as err:
                _count(bill, err.code)
                tick()
        while window:
            _settle(window.popleft(), bill, timeout_s, tick)
    bill.seconds = time.perf_counter() - started


def _routed_tier(gateway: Any, data: dict[str, Any]) -> str | None:
    """The tier the gateway's router picks for ``data`` as traced (None if it cannot route)."""
    from models.domain.request import parse_request
    from scheduler.route import decide_route

    try:
        route = decide_route(parse_request(dict(data, request_id="replay-pin")),
                             gateway.catalogue, gateway.settings.routing, scorer=gateway.scorer,
                             ladders=getattr(gateway, "ladders", None))
    except SluiceError:
        return None  # the gateway will refuse the request itself, with its own error
    # A ladder's rung is pinned by its model: its tier name may map onto another rung.
    return route.model if route.rung is not None else route.tier


def _settle(handle: Any, bill: RunBill, timeout_s: float, tick: Callable[[], None]) -> None:
    try:
        handle.result(timeout=timeout_s)
        bill.completed += 1
    except SluiceError as err:
        _count(bill, err.code)
    finally:
        tick()


def _count(bill: RunBill, code: str) -> None:
    bill.failed[code] = bill.failed.get(code, 0) + 1


def _need_worker(gateway: Any, settings: Settings) -> None:
    try:
        replies = gateway.app.control.ping(timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - any broker failure means the same to the operator
        raise ReplayError(f"cannot reach the broker at {settings.broker.url.split('@')[-1]}: "
                          f"{exc}; check SLUICE_BROKER__URL") from exc
    if not replies:
        raise ReplayError("no Celery worker answers on the configured broker; start one with "
                          "`sluice worker --lane all` (pointed at the same SLUICE_* settings) "
                          "or drop --live to replay on embedded services")


def _read_bill(bill: RunBill, settings: Settings) -> None:
    from models.db import spend
    from queues.wiring import ledger_sessions

    sessions = ledger_sessions(settings)
    try:
        with sessions() as s:
            totals = spend.spend_lines(s, request_id_prefix=bill.prefix)
            bill.total = totals[0] if totals else None
            bill.by_tier = spend.spend_lines(s, "tier", "model", request_id_prefix=bill.prefix)
    finally:
        bind = sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
