"""Worker logs name each request and how it ended, never the answer text."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

from workers.log_privacy import HideReplies, outcome_of


def _trace_record(value: str) -> logging.LogRecord:
    # The shape of Celery's success line (celery.app.trace.LOG_SUCCESS).
    fmt = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
    return logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, fmt,
                             ({"name": "sluice.execute_api", "id": "r-1", "runtime": 0.1,
                               "return_value": value},), None)


def test_the_filter_keeps_the_outcome_and_drops_the_text() -> None:
    ok = _trace_record("{'ok': True, 'result': {'request_id': 'r-1', 'text': 'secret answer'}}")
    assert HideReplies().filter(ok)
    line = ok.getMessage()
    assert "secret answer" not in line and line.endswith(": ok") and "r-1" in line
    err = _trace_record("{'ok': False, 'code': 'budget_exceeded', 'request_id': 'r-1'...")
    HideReplies().filter(err)
    assert err.getMessage().endswith(": error budget_exceeded")
    assert outcome_of("'pong'") == "<hidden>"


def test_a_reply_repr_cut_where_celery_cuts_it_still_says_how_it_ended() -> None:
    from celery.utils.saferepr import saferepr

    from models.domain.errors import BudgetExceeded
    from queues.envelope import error_reply
    from workers.log_privacy import REPR_CHARS

    reply = error_reply("r-" + "x" * 60, BudgetExceeded("team t spent its budget", budget="b"))
    assert outcome_of(saferepr(reply, REPR_CHARS)) == "error budget_exceeded"
    # The same cut repr is the task-succeeded event Flower shows: even the shortest request
    # id leaves no character of the answer in it.
    from models.domain.result import ChatResult, Route
    from queues.envelope import ok_reply

    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive", reason="test")
    ok = ok_reply(ChatResult(request_id="r", text="Zebra", provider="openai",
                             model="gpt-4o-mini", route=route))
    cut = saferepr(ok, REPR_CHARS)
    assert "Z" not in cut and outcome_of(cut) == "ok"


@pytest.mark.integration
def test_a_real_worker_log_holds_no_answer(gateway: Any, celery_worker_proc: Any) -> None:
    rid = f"logpriv-{uuid.uuid4().hex[:8]}"
    result = gateway.complete({"request_id": rid, "team": "privacy", "feature": "logs",
                               "model": "cheap", "max_tokens": 24, "cache": {"mode": "bypass"},
                               "messages": [{"role": "user", "content": "Rephrase: lamp"}]},
                              timeout=30)
    assert len(result.text) > 8
    log_path = celery_worker_proc.log_path

    def succeeded() -> list[str]:
        return [ln for ln in log_path.read_text(errors="replace").splitlines()
                if rid in ln and "succeeded" in ln]

    # The answer comes before the task returns (its ledger write and token settle follow),
    # and Celery logs "succeeded" only then: wait for that line, not the "received" one.
    deadline = time.time() + 10
    while not succeeded():
        assert time.time() < deadline, "the worker never logged the request's end"
        time.sleep(0.1)
    text = log_path.read_text(errors="replace")
    assert succeeded()[0].endswith(": ok"), succeeded()
    assert result.text not in text
