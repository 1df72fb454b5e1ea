"""frontdoor_bench's CPU lines: CPU per answered request against LiteLLM's, and the rate one
core holds (answers per CPU second), from the same runs."""

from __future__ import annotations

import pytest
from rich.console import Console

from ops.bench.door_bench import DIRECT, LITELLM
from ops.bench.frontdoor_bench import DOOR, cpu_ratios, report
from ops.bench.loadgen import RunResult


def _run(target: str, ok: int, cpu_s: float) -> RunResult:
    return RunResult(target=target, rate=100, sent=ok, latencies_ms=[5.0] * ok,
                     elapsed_s=10.0, cpu_s=cpu_s)


def test_cpu_per_request_and_held_per_core_compare_the_two_proxies() -> None:
    runs = {DOOR: _run(DOOR, 800, 8.0), LITELLM: _run(LITELLM, 1000, 20.0)}
    ours, theirs, ours_core, theirs_core = cpu_ratios(runs) or (0, 0, 0, 0)
    assert (ours, theirs) == pytest.approx((10.0, 20.0))
    assert (ours_core, theirs_core) == pytest.approx((100.0, 50.0))
    assert cpu_ratios({DOOR: _run(DOOR, 0, 0.0), LITELLM: runs[LITELLM]}) is None


def test_the_report_prints_both_ratios_against_their_goals() -> None:
    console = Console(width=200, record=True)
    report([_run(DIRECT, 1000, 0.0), _run(DOOR, 800, 8.0), _run(LITELLM, 1000, 20.0)], console)
    text = console.export_text()
    assert "0.50x" in text and "(goal <= 0.5x)" in text
    assert "2.00x (goal >= 1.5x)" in text
