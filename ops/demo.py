"""``sluice demo``: the whole pipeline on embedded defaults, then the bill by feature and team."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.domain.errors import SluiceError
from models.domain.settings import Settings, load_settings
from queues.names import QUEUES


@dataclass
class DemoOutcome:
    """Counts and the ledger's spend lines after a demo run."""

    sent: int = 0
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    by_feature: list[Any] = field(default_factory=list)
    by_team: list[Any] = field(default_factory=list)
    by_model: list[Any] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)
    ledger_url: str = ""


def demo_settings(home: Path, env: dict[str, str] | None = None) -> Settings:
    """Embedded defaults under ``home``: in-memory broker, SQLite ledger, in-process cache."""
    base = load_settings(env)
    db = home / "demo-ledger.db"
    return base.model_copy(update={
        "home": home,
        "broker": base.broker.model_copy(update={"url": "memory://",
                                                 "result_backend": "cache+memory://"}),
        "database": base.database.model_copy(update={"url": f"sqlite:///{db}"}),
    })


@contextmanager
def provider_endpoints(settings: Settings) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Real providers where a key is set; the local stand-in for the others."""
    p = settings.providers
    where = {"openai": "api.openai.com" if p.openai_api_key else "",
             "anthropic": "api.anthropic.com" if p.anthropic_api_key else "",
             "google": "generativelanguage.googleapis.com" if p.google_api_key else ""}
    if all(where.values()):
        yield settings, where
        return
    from workers.providers.standin import StandIn

    with StandIn() as standin:
        updates: dict[str, Any] = {}
        if not where["openai"]:
            updates["openai_base_url"] = standin.openai_base_url
            where["openai"] = f"stand-in {standin.url}"
        if not where["anthropic"]:
            updates["anthropic_base_url"] = standin.anthropic_base_url
            where["anthropic"] = f"stand-in {standin.url}"
        if not where["google"]:
            updates["google_base_url"] = standin.gemini_base_url
            where["google"] = f"stand-in {standin.url}"
        yield settings.model_copy(update={"providers": p.model_copy(update=updates)}), where


def run_demo(n: int = 200, *, home: Path | None = None, concurrency: int = 8,
             progress: Any = None) -> DemoOutcome:
    """Send ``n`` workload requests through cache, routing, queue, provider SDK and ledger."""
    from models.db import spend
    from models.db.engine import make_engine, session_factory
    from ops.db import upgrade
    from ops.embedded import embedded_worker
    from ops.workload import demo_requests
    from queues.producer import connect

    home = (home or Path(os.environ.get("SLUICE_HOME", ".sluice"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(home)
    (home / "demo-ledger.db").unlink(missing_ok=True)
    upgrade(settings.database.url)
    out = DemoOutcome(ledger_url=settings.database.url)
    started = time.perf_counter()
    with ExitStack() as stack:
        settings, out.providers = stack.enter_context(provider_endpoints(settings))
        gateway = connect(settings)
        stack.callback(gateway.close)
        stack.enter_context(embedded_worker(gateway.app, [q for q in QUEUES if q.endswith(".api")],
                                            concurrency=concurrency))
        handles = []
        for req in demo_requests(n):
            out.sent += 1
            try:
                handles.append(gateway.submit(req))
            except SluiceError as err:
                out.failed[err.code] = out.failed.get(err.code, 0) + 1
        for h in handles:
            try:
                h.result(timeout=120)
                out.completed += 1
            except SluiceError as err:
                out.failed[err.code] = out.failed.get(err.code, 0) + 1
            if progress is not None:
                progress()
    out.seconds = time.perf_counter() - started
    engine = make_engine(settings.database.url)
    with session_factory(engine)() as s:
        out.by_feature = spend.spend_by(s, "team", "feature")
        out.by_team = spend.spend_by(s, "team")
        out.by_model = spend.spend_by(s, "tier", "model")
    engine.dispose()
    return out


def clean(home: Path) -> None:
    """Remove a demo home folder."""
    shutil.rmtree(home, ignore_errors=True)
