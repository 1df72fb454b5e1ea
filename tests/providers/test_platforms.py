"""The platforms' own wire details, through the official SDKs against the stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.request import parse_request
from models.domain.tokens import count_request
from workers.providers.base import ProviderCall
from workers.providers.deployed import build_deployment_provider
from workers.providers.standin import StandIn, StandInConfig
from workers.providers.standin.platforms import event_frame

POOL = '''
[models.llama-pool]
provider = "openai_compatible"
tier = "self-hosted"
context = 131072
api_name = "meta-llama/Llama-3.1-8B-Instruct"
base_url = "{url}"
key_env = "SLUICE_TEST_POOL_KEY"
pricing = "gpu_pool"
min_cacheable_tokens = 1024
capabilities = ["json_mode", "sampling"]
'''
LONG_SYSTEM = "You are a careful assistant. " + " ".join(f"Rule {i}: be concise."
                                                        for i in range(400))


@pytest.fixture(scope="module")
def pool(tmp_path_factory: Any) -> Iterator[tuple[Any, Any]]:
    """A stand-in serving a self-hosted pool declared by configuration only."""
    shipped = (Path(__file__).parents[2] / "models" / "data" / "prices.toml").read_text()
    path = tmp_path_factory.mktemp("pool") / "prices.toml"
    path.write_text(shipped + POOL.format(url="http://127.0.0.1:1/v1"))
    with StandIn(StandInConfig(catalogue=load_catalogue(path))) as server:
        path.write_text(shipped + POOL.format(url=server.openai_base_url))
        yield server, load_catalogue(path)


def ask(**kw: Any) -> Any:
    return parse_request({"team": "t", "feature": "f", "max_tokens": 30,
                          "messages": [{"role": "user", "content": "Which tea?"}], **kw})


def test_a_pool_declared_by_configuration_bills_reported_prefix_hits_at_the_gpu_price(
        pool: tuple[Any, Any], monkeypatch: Any) -> None:
    server, cat = pool
    monkeypatch.setenv("SLUICE_TEST_POOL_KEY", "pool-key")
    from models.domain.settings import load_settings

    spec = cat.get("llama-pool").variants[0]
    prov = build_deployment_provider(spec.deployment, load_settings({}))
    try:
        first = prov.complete(ProviderCall(request=ask(static={"system": LONG_SYSTEM}),
                                           model=spec))
        second = prov.complete(ProviderCall(request=ask(static={"system": LONG_SYSTEM}),
                                            model=spec))
    finally:
        prov.close()
    # The server reported prompt_tokens_details.cached_tokens on the repeat: billed as hits.
    assert first.usage.cache_read == 0 and second.usage.cache_read >= 1024
    assert second.usage.input_total == first.usage.input_total
    price = spec.price  # [gpu_pool]: GPU-hour over measured throughput; hits skip prefill
    assert price == cat.get("sluice-tiny-llama").price and price.cache_read == 0
    million = Decimal(1_000_000)
    assert cost_of(second.usage, spec) == (
        (second.usage.input_uncached * price.input + second.usage.output * price.output)
        / million).quantize(Decimal("1e-12"))
    assert cost_of(second.usage, spec) < cost_of(first.usage, spec)
    # Sent under the server's model name, without OpenAI's own prompt_cache_key.
    body = server.received(contains="Llama-3.1-8B")[-1]["body"]
    assert body["model"] == spec.api_name and "prompt_cache_key" not in body


def test_a_pool_key_variable_that_is_not_set_is_a_config_error(pool: tuple[Any, Any],
                                                              monkeypatch: Any) -> None:
    from models.domain.errors import ConfigError
    from models.domain.settings import load_settings

    _server, cat = pool
    dep = cat.get("llama-pool").variants[0].deployment
    monkeypatch.delenv("SLUICE_TEST_POOL_KEY", raising=False)
    azure = type(dep)(**{**dep.__dict__, "transport": "azure", "api_version": "2024-10-21"})
    with pytest.raises(ConfigError, match="SLUICE_TEST_POOL_KEY is not set"):
        build_deployment_provider(azure, load_settings({}))


def test_bedrock_refuses_an_unsigned_call_and_streams_aws_event_frames(standin: Any) -> None:
    path = "/model/anthropic.claude-sonnet-4-6/invoke"
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(standin.url + path, json=body).status_code == 403
    signed = {"authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/bedrock/"
                               "aws4_request, SignedHeaders=host, Signature=00"}
    assert httpx.post(standin.url + path, json=body, headers=signed).status_code == 200
    assert httpx.post(standin.url + path, json={**body, "model": "x"},
                      headers=signed).status_code == 400  # the model is in the path only
    stream = httpx.post(standin.url + path + "-with-response-stream", json=body, headers=signed)
    assert stream.headers["content-type"].startswith("application/vnd.amazon.eventstream")
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(stream.content)
    kinds = [m.headers[":event-type"] for m in buffer]
    assert kinds and set(kinds) == {"chunk"}


def test_the_event_frame_is_what_botocore_reads() -> None:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(event_frame(b'{"bytes": "e30="}', {":event-type": "chunk"}))
    (message,) = list(buffer)
    assert message.payload == b'{"bytes": "e30="}' and message.headers[":event-type"] == "chunk"


def test_vertex_and_azure_paths_check_what_the_platforms_check(standin: Any) -> None:
    vertex = (f"{standin.url}/v1/projects/p/locations/europe-west1/publishers/anthropic/"
              "models/claude-sonnet-4-6")
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": "Bearer ya29.token"}
    assert httpx.post(vertex + ":rawPredict", json=body, headers=auth).status_code == 200
    assert httpx.post(vertex + ":rawPredict", json=body).status_code == 401
    assert httpx.post(vertex + ":predict", json=body, headers=auth).status_code == 404
    azure = f"{standin.url}/openai/deployments/gpt-4o-mini/chat/completions"
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    key = {"api-key": "k"}
    assert httpx.post(azure + "?api-version=2024-10-21", json=chat, headers=key
                      ).status_code == 200
    assert httpx.post(azure, json=chat, headers=key).status_code == 404  # no api-version
    assert httpx.post(azure.replace("gpt-4o-mini", "nobody") + "?api-version=1", json=chat,
                      headers=key).status_code == 404


@pytest.mark.parametrize("path", ["bedrock", "vertex"])
def test_platform_faults_reach_the_adapter_typed(standin: Any, monkeypatch: Any,
                                                 path: str) -> None:
    from tests.providers.test_adapters import call, make_adapter

    prov = make_adapter(path, standin, monkeypatch)
    try:
        standin.script_faults(["429;retry-after=3"], path=path)
        with pytest.raises(ProviderRetryable) as exc:
            prov.complete(call(path))
        assert exc.value.status == 429 and exc.value.retry_after == 3
        standin.script_faults(["401"], path=path)
        with pytest.raises(ProviderPermanent):
            prov.complete(call(path))
        reply = prov.complete(call(path))  # and the next call answers
        assert reply.usage.input_total >= count_request(call(path).request)
    finally:
        prov.close()
