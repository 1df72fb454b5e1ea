"""A copy of a failed request's message must not run it again (found by the soak, issue 16).

The in-flight sweeper re-sends a message nobody claimed within ``RESEND_AFTER_S`` (a long
backlog is enough); the original and the copy both sit in the queue. When the original's run
ended in an error (its timed-out attempts charged as the provider may bill them), the copy
found an errored row, which the claim treats as the caller's retry: it ran the request again
and paid the provider a second time, behind the caller's back (the soak's "billed twice").
A message sent before the failed run began is a copy; only the caller's own retry runs it.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from models.domain.errors import SluiceError
from models.domain.request import parse_request
from models.domain.tokens import count_request
from queues.envelope import Envelope
from queues.handle import TaskHandle
from scheduler.route import decide_route
from tests.integration.test_money_leaks import (  # noqa: F401 - fixtures
    attempts, budget, calls, data, leak_env, leak_gateway, ledger_row, sessions, wait_final,
    worst)

pytestmark = pytest.mark.integration


def test_a_copy_of_a_failed_requests_message_is_not_run_again(
        leak_gateway: Any, sessions: Any, standin: Any) -> None:
    feature = f"copy-{uuid.uuid4().hex[:8]}"
    budget(sessions, leak_gateway, feature, Decimal(1))
    d = data(feature, model="claude-haiku-4-5", max_tokens=30)
    req = parse_request(d)
    route = decide_route(req, leak_gateway.catalogue, leak_gateway.settings.routing)
    rid = leak_gateway.admission.reserve(req, route, worst(d, "claude-haiku-4-5"))
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req), reservation_id=rid)
    # Every attempt times out (the SDK gives up after 1 s): the request ends in an error.
    standin.script_faults(["timeout=3"] * 3, path="anthropic", model="claude-haiku-4-5")
    before = calls(standin, "/v1/messages")
    try:
        with pytest.raises(SluiceError):
            TaskHandle(leak_gateway._send(env)).result(timeout=60)
        failed = wait_final(sessions, req.request_id)
        assert failed.outcome == "error"
        sent = calls(standin, "/v1/messages") - before
        charged = [a.cost for a in attempts(sessions, req.request_id)]
        # The sweeper's copy: the same message, sent again. (Its handle would read the first
        # run's stored error at once.) A request sent after it on the same queue answers once
        # the worker has taken the copy; the copy had seconds more to call the provider.
        leak_gateway._send(env)
        leak_gateway.complete(data(feature, model="gpt-4o-mini", max_tokens=5), timeout=30)
        deadline = time.time() + 3
        while time.time() < deadline and ledger_row(sessions, req.request_id).created_at == \
                failed.created_at:
            time.sleep(0.1)
        after = calls(standin, "/v1/messages") - before
    finally:
        standin.reset()
    assert after == sent, "the copy paid the provider again"
    assert [a.cost for a in attempts(sessions, req.request_id)] == charged
    copy_row = ledger_row(sessions, req.request_id)
    assert (copy_row.outcome, copy_row.created_at) == ("error", failed.created_at), \
        "the copy claimed the failed request and ran it again"
    # The caller's own retry (a message sent now, same request id) still runs it. (Read from
    # the ledger: a handle under the same task id finds the first run's stored error.)
    retry = Envelope(request=req, route=route, prompt_tokens=count_request(req))
    leak_gateway._send(retry)
    deadline = time.time() + 30
    while ledger_row(sessions, req.request_id).outcome != "ok":
        assert time.time() < deadline, "the caller's retry never ran"
        time.sleep(0.1)
    assert calls(standin, "/v1/messages") == 1  # counted from the reset: the retry's call
