"""Fuzz the front door from its own /openapi.json with schemathesis: no 5xx, answers as declared.

Valid and invalid (negative) requests, a bounded number per operation, with an operator key
so the admin endpoints are exercised too; the real worker answers the valid completions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from models.domain.catalogue import load_catalogue  # noqa: E402
from queues.http.openapi import openapi_schema  # noqa: E402

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance,  # noqa: E402
                                               ignored_auth, response_schema_conformance,
                                               status_code_conformance)
from tests.e2e.frontdoor_support import mint, serve_frontdoor  # noqa: E402

pytestmark = pytest.mark.integration
#: Model names the session worker can answer (the api queues; policies resolve to these).
HOSTED = {"auto", "cheap", "flagship", *(m.name for m in load_catalogue().models.values()
                                        if m.provider != "vllm")}
#: Per operation and generation mode: 6 operations x 2 modes x this stays well under a minute.
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ignored_auth]


@pytest.fixture(scope="module")
def door_url(integration_settings: Any, gateway: Any) -> Iterator[str]:
    with serve_frontdoor(integration_settings) as url:
        yield url


@pytest.fixture(scope="module")
def door_schema(door_url: str) -> Any:
    document = httpx.get(door_url + "/openapi.json").json()
    for body in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest",
                 "ResponseRequest"):
        model = document["components"]["schemas"][body]["properties"]["model"]
        # No GPU worker runs in this session: a self-hosted request would wait for one until
        # its timeout (a 504), so the fuzzer sticks to the hosted models the worker serves.
        model["enum"] = [m for m in model["enum"] if m != "self-hosted" and m in HOSTED]
        assert "gpt-4o-mini" in model["enum"] and "sluice-tiny-llama" not in model["enum"]
    # A caller's own short timeout rightly ends in a 504 when the worker is slower than it:
    # not a server fault, so the fuzzer leaves the header out.
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        door = document["paths"][path]["post"]
        door["parameters"] = [p for p in door["parameters"] if p["name"] != "x-sluice-timeout"]
        assert len(door["parameters"]) >= 6
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def operator_headers(pg_url: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint(pg_url, 'fuzz', role='operator')}"}


# Operations are listed from the same document the server serves; schemathesis's lazy
# fixture loader does not run under pytest 9, so strategies are drawn per operation here.
OPERATIONS = [(path, method.upper()) for path, item in openapi_schema()["paths"].items()
              for method in item]


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_server_errors(path: str, method: str, mode: str, door_url: str, door_schema: Any,
                          operator_headers: dict[str, str]) -> None:
    operation = door_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=door_url, headers=operator_headers, timeout=60)
        case.validate_response(response, checks=CHECKS, headers=operator_headers)

    check()
