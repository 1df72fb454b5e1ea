"""Helpers of the quality-guard integration tests: ask a feature, wait on the guard, count pairs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db.tables import JudgementRow

#: The module workers' logs, quoted when a wait times out.
WORKER_LOG: list[Any] = []


def ask(gw: Any, feature: str, text: str) -> Any:
    """One request of ``feature`` through the gateway, the response cache bypassed."""
    return gw.complete({"request_id": f"q-{uuid.uuid4().hex}", "team": "catalog",
                        "feature": feature, "max_tokens": 16, "cache": {"mode": "bypass"},
                        "messages": [{"role": "user", "content": text}]}, timeout=60)


def wait_for(check: Any, timeout: float = 120.0) -> Any:
    """``check()``'s first truthy value; on a timeout, fail quoting what the workers said."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    # What the worker said about it: the quality guard's steps log why they did nothing.
    said = [line for log in WORKER_LOG if log.exists() for line in log.read_text().splitlines()
            if "sluice.quality" in line or "ERROR" in line or "not sent" in line]
    pytest.fail("timed out waiting for the quality guard; the worker logged:\n"
                + "\n".join(said[-40:]))


def judged(sessions: Any, feature: str) -> int:
    """Pairs of ``feature`` judged so far."""
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(JudgementRow).where(
            JudgementRow.feature == feature, JudgementRow.agree.is_not(None))) or 0)
