"""``sluice advise`` estimates against ``ops/replay``: a trace replayed on embedded services,
advised from that replay's ledger, then replayed again with the advised lever applied."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.db.engine import make_engine, session_factory
from models.domain.catalogue import load_catalogue
from ops.advise import advise
from ops.replay.levers import BY_NAME
from ops.replay.runner import replay

pytestmark = pytest.mark.slow
KEEP = {"SLUICE_PRIVACY__STORE_TEXT_FEATURES": json.dumps(["orders", "describe"])}


def _replay(trace: list[dict[str, Any]], home: Path, env: dict[str, str]) -> Decimal:
    # One request at a time, as the trace was recorded: an answer is stored (and a prefix
    # cached) before the next request asks.
    out = replay(trace, [BY_NAME["all"]], home=home, concurrency=1, env=env)
    run = out.runs[0]
    assert run.completed == len(trace) and not run.failed
    return run.cost


def _advice(home: Path, since: datetime, lever: str) -> Any:
    engine = make_engine(f"sqlite:///{home}/replay-ledger.db")
    try:
        with session_factory(engine)() as s:
            lines = [a for a in advise(s, load_catalogue(), since=since) if a.lever == lever]
    finally:
        engine.dispose()
    assert len(lines) == 1, lines
    return lines[0]


def _within(estimate: Decimal, actual: Decimal) -> None:
    assert actual > 0
    assert abs(estimate - actual) <= Decimal("0.10") * actual, (estimate, actual)


def test_the_normalization_estimate_matches_a_replay_under_the_rule(tmp_path: Path) -> None:
    trace = [{"team": "shop", "feature": "orders", "model": "cheap", "max_tokens": 40,
              "messages": [{"role": "user", "content": f"Where is my order {1000 + i}-XQ? I "
                            f"placed it on 2026-11-{10 + i:02d} and it has not arrived."}]}
             for i in range(8)]
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    paid = _replay(trace, tmp_path / "as-traced", KEEP)
    advice = _advice(tmp_path / "as-traced", since, "normalize")
    rule = advice.action.split("SLUICE_CACHE__FEATURES='")[1].rstrip("')")
    assert json.loads(rule) == {"orders": {"patterns": ["order_id", "date"]}}
    applied = _replay(trace, tmp_path / "normalized",
                      {**KEEP, "SLUICE_CACHE__FEATURES": rule})  # the advised rule, verbatim
    _within(advice.window_saving, paid - applied)


def test_the_short_prefix_estimate_matches_a_replay_with_it_padded(tmp_path: Path) -> None:
    from models.domain.tokens import count_text
    from ops.advise_text import PAD_MARGIN

    rules = " ".join(f"Rule {i}: keep sentences short and concrete." for i in range(90))
    padded = rules
    for i in range(200):
        if count_text(padded) >= 1024 + PAD_MARGIN:
            break
        padded += f" Note {i}: sizes are in centimetres."
    assert 800 < count_text(rules) < 1024

    def trace(system: str) -> list[dict[str, Any]]:
        return [{"team": "shop", "feature": "describe", "model": "gpt-4.1", "max_tokens": 8,
                 "cache": {"mode": "bypass"}, "static": {"system": system},
                 "messages": [{"role": "user", "content": f"Describe item {i}."}]}
                for i in range(8)]

    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    paid = _replay(trace(rules), tmp_path / "as-traced", KEEP)
    advice = _advice(tmp_path / "as-traced", since, "pad-prefix")
    applied = _replay(trace(padded), tmp_path / "padded", KEEP)
    _within(advice.window_saving, paid - applied)
