"""Provider faults from the stand-in: retried per policy, then the fallback, then a typed error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from models.db import attempts, ledger
from models.domain.errors import ProviderRetryable, from_dict
from models.domain.request import parse_request
from models.domain.result import Route
from models.domain.settings import load_settings
from queues.envelope import Envelope
from workers.runtime import build_runtime
from workers.service import execute

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
ROUTE = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
              lane="interactive", reason="chaos")


@pytest.fixture(scope="module")
def rt(integration_env: dict[str, str]) -> Any:
    env = {**integration_env, "SLUICE_PROVIDERS__TIMEOUT_S": "1",
           "SLUICE_PROVIDERS__FALLBACKS": '{"gpt-4o-mini": ["claude-haiku-4-5"]}'}
    runtime = build_runtime(load_settings(env), admission=None, cache=None)
    yield runtime
    runtime.close()


def message() -> dict[str, Any]:
    req = parse_request({"request_id": f"pf-{uuid.uuid4().hex}", "team": "t", "feature": "f",
                         "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    return Envelope(request=req, route=ROUTE).to_message()


def calls(standin: Any) -> tuple[int, int]:
    by = standin.stats()["by_path"]
    return int(by.get("/v1/chat/completions", 0)), int(by.get("/v1/messages", 0))


@pytest.mark.parametrize("faults", [["429;retry-after=0", "500"], ["529", "timeout=3"],
                                    ["malformed", "503"]])
def test_transient_faults_are_retried_then_answered_once(rt: Any, standin: Any,
                                                        faults: list[str]) -> None:
    standin.script_faults(faults, path="openai", model="gpt-4o-mini")
    before = calls(standin)
    msg = message()
    reply = execute(msg, rt)
    assert reply["ok"], reply
    assert calls(standin)[0] - before[0] == len(faults) + 1  # our retries only, no SDK ones
    with rt.session() as s:
        row = ledger.get(s, msg["request"]["request_id"])
        assert row is not None and row.outcome == "ok" and row.cost > 0
        tried = attempts.of_request(s, msg["request"]["request_id"])
    assert len(tried) == len(faults) + 1 and tried[-1].outcome == "ok"
    assert row.cost == sum(a.cost for a in tried)
    if "malformed" in faults:
        # A 200 that does not parse may still be billed: charged at an estimate, shown apart.
        bad = next(a for a in tried if a.outcome == "unparseable")
        assert bad.billing == "estimated" and bad.cost > 0
        assert row.estimated_cost >= bad.cost > 0


def test_exhausted_retries_fall_back_and_bill_only_the_fallback(rt: Any, standin: Any) -> None:
    standin.script_faults(["500", "500", "500"], path="openai", model="gpt-4o-mini")
    before = calls(standin)
    msg = message()
    reply = execute(msg, rt)
    assert reply["ok"] and reply["result"]["model"] == "claude-haiku-4-5", reply
    after = calls(standin)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    assert execute(msg, rt, previous=reply) == reply  # a redelivery pays nothing more
    assert calls(standin) == after
    with rt.session() as s:
        row = ledger.get(s, msg["request"]["request_id"])
        assert row is not None and row.model == "claude-haiku-4-5" and row.outcome == "ok"


def test_everything_failing_ends_in_a_typed_error_that_costs_nothing(rt: Any,
                                                                    standin: Any) -> None:
    standin.script_faults(["503"] * 3, path="openai", model="gpt-4o-mini")
    standin.script_faults(["529"] * 3, path="anthropic", model="claude-haiku-4-5")
    msg = message()
    reply = execute(msg, rt)
    assert not reply["ok"]
    err = from_dict(reply["error"])
    assert isinstance(err, ProviderRetryable) and err.status == 529 and "retry" in err.message
    with rt.session() as s:
        row = ledger.get(s, msg["request"]["request_id"])
        assert row is not None and row.outcome == "error" and row.cost == 0

