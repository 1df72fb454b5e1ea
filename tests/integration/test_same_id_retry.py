"""A caller's retry of an errored request under the same request id gets the retry's answer.

Celery stores the reply under the task id (the tenant-scoped request id) and never overwrites
a stored SUCCESS, which an error reply is: the retry's handle read the first run's error at
once, while the retry ran and was billed, and its answer could not even be stored. Now the
producer sets the old error aside before it publishes the retry (queues/retried_results.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from models.db import attempts as attempt_rows
from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.domain.errors import ProviderPermanent
from models.domain.request import parse_request
from models.domain.tokens import count_request
from queues.envelope import Envelope, task_id_for
from queues.handle import TaskHandle
from scheduler.route import decide_route

pytestmark = pytest.mark.integration
MODEL = "claude-haiku-4-5"


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Iterator[Any]:
    engine = make_engine(pg_url, pool_size=2)
    yield session_factory(engine)
    engine.dispose()


def _failed_once(gateway: Any, standin: Any) -> tuple[dict[str, Any], Envelope]:
    """A request whose first run ended in an error (the provider refused it: 400)."""
    d = {"request_id": f"retry-{uuid.uuid4().hex}", "team": "retry", "feature": "retry",
         "model": MODEL, "max_tokens": 20, "cache": {"mode": "bypass"},
         "messages": [{"role": "user", "content": f"Say hi {uuid.uuid4().hex[:6]}"}]}
    req = parse_request(d)
    route = decide_route(req, gateway.catalogue, gateway.settings.routing)
    env = Envelope(request=req, route=route, prompt_tokens=count_request(req))
    standin.script_faults(["400"], path="anthropic", model=MODEL)
    with pytest.raises(ProviderPermanent):
        TaskHandle(gateway._send(env)).result(timeout=30)
    return d, env


def test_a_retry_of_an_errored_request_gets_the_new_runs_answer(
        gateway: Any, standin: Any, sessions: Any) -> None:
    d, _ = _failed_once(gateway, standin)
    result = gateway.submit(d).result(timeout=30)  # was: the first run's 400, at once
    assert result.request_id == d["request_id"] and result.text and result.cost > 0
    with sessions() as s:
        row = ledger.get(s, d["request_id"])
        tried = attempt_rows.of_request(s, d["request_id"])
    assert row is not None and (row.outcome, row.cost) == ("ok", result.cost)
    assert [a.outcome for a in tried] == ["refused", "ok"]  # each attempt once
    # Exactly once: a further retry under the id is answered from the stored answer.
    calls = standin.stats()["by_path"].get("/v1/messages", 0)
    again = gateway.submit(d).result(timeout=30)
    assert (again.text, again.cost) == (result.text, result.cost)
    assert standin.stats()["by_path"].get("/v1/messages", 0) == calls


def test_a_copy_of_the_failed_message_does_not_answer_the_retry(
        gateway: Any, standin: Any, sessions: Any) -> None:
    """The in-flight sweeper's copy of the failed run's message, taken while the retry waits:
    it must store nothing (a ResultLost stored there would be the retry's answer)."""
    d, env = _failed_once(gateway, standin)
    gateway.forget_error(task_id_for(env.request))  # what the retry's producer does first
    gateway._send(env)  # the copy, queued ahead of the retry
    result = gateway.submit(d).result(timeout=30)
    assert result.request_id == d["request_id"] and result.text
    with sessions() as s:
        tried = attempt_rows.of_request(s, d["request_id"])
    assert [a.outcome for a in tried] == ["refused", "ok"]  # the copy sent nothing
