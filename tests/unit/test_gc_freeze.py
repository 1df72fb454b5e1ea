"""queues/gc_freeze.py: a process freezes its long-lived heap once, and only once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc
from queues.gc_freeze import freeze_once
kept = [object() for _ in range(1000)]
assert gc.get_freeze_count() == 0
assert freeze_once() is True
frozen = gc.get_freeze_count()
assert frozen >= 1000, frozen
more = [object() for _ in range(1000)]
assert freeze_once() is False and gc.get_freeze_count() == frozen, "froze twice"
print("ok", frozen)
"""


def test_the_first_call_freezes_the_heap_and_later_calls_do_nothing() -> None:
    # In a fresh interpreter: freezing this test process would outlive the test.
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
