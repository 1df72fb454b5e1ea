"""The per-stage CPU table: each sample goes to its innermost stage, the shares add up."""

from __future__ import annotations

from pathlib import Path

from ops.bench.cpu_stages import WORKER_RULES, stage_shares, table

TRACE = "process 1;fast_trace_task (celery/app/trace.py:1);execute (workers/service.py:102)"
FOLDED = "\n".join([
    "process 1;asynloop (celery/worker/loops.py:80);on_readable (kombu/transport/redis.py:1) 30",
    f"{TRACE};finalize (workers/attempts.py:240);execute (psycopg/cursor.py:1) 50",
    f"{TRACE} 15",
    "process 1;_bootstrap (threading.py:1) 5"])


def test_each_sample_goes_to_its_innermost_stage(tmp_path: Path) -> None:
    f = tmp_path / "spy.txt"
    f.write_text(FOLDED)
    counts, total = stage_shares(f, WORKER_RULES)
    assert total == 100
    # psycopg under finalize is the ledger's cost, not the wrapper's that encloses both
    assert counts["final ledger transaction: finish + settle (PostgreSQL)"] == 50
    assert counts["pipeline glue: parse the envelope, pick the provider, price the reply"] == 15
    assert counts["Celery consumer: receive, decode, hand to a thread"] == 30
    assert sum(counts.values()) == total


def test_the_table_splits_the_measured_cpu_by_share(tmp_path: Path) -> None:
    f = tmp_path / "spy.txt"
    f.write_text(FOLDED)
    lines = table(f, 10.0, WORKER_RULES)
    ledger = next(line for line in lines if line.strip().startswith("final ledger"))
    assert ledger.split()[-2] == "5.00"  # half the samples of 10 ms per request
    assert lines[-1].split()[-2] == "10.00"
