"""Deployments in the catalogue: parsing, per-platform prices, weighted sticky ranking."""

from __future__ import annotations

import tomllib
from collections import Counter
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from models.domain.catalogue import parse_catalogue
from models.domain.charges import reach_worst_case
from models.domain.deployments import deployment_name, rank
from models.domain.errors import ConfigError
from models.domain.tokens import PromptCount

SHIPPED = tomllib.loads(resources.files("models.data").joinpath("prices.toml").read_text())


def catalogue(extra: str) -> Any:
    more = tomllib.loads(extra)
    data = {**SHIPPED, "deployments": more.get("deployments", {}),
            "models": {**SHIPPED["models"], **more.get("models", {})}}
    return parse_catalogue(data, "<test>")


DEPLOYED = catalogue('''
[deployments.direct]
model = "claude-sonnet-4-6"
transport = "anthropic"
weight = 1
[deployments.bedrock-us]
model = "claude-sonnet-4-6"
transport = "bedrock"
region = "us-east-1"
regional = true
weight = 3
[deployments.vertex-eu]
model = "claude-sonnet-4-6"
transport = "vertex"
region = "europe-west1"
project = "p"
input = "2.50"
[deployments.azure-se]
model = "gpt-4o"
transport = "azure"
base_url = "https://r.openai.azure.com"
api_version = "2024-10-21"
api_name = "gpt4o-prod"
key_env = "AZURE_KEY"
''')


def test_each_deployment_is_its_model_priced_by_its_platform() -> None:
    model = DEPLOYED.get("claude-sonnet-4-6")
    by = {deployment_name(v): v for v in model.variants}
    assert set(by) == {"direct", "bedrock-us", "vertex-eu"}
    # Anthropic's list price direct; Bedrock's regional endpoint 10 % more, on every class.
    assert by["direct"].price == model.price
    assert by["bedrock-us"].price.input == Decimal("3.30")
    assert by["bedrock-us"].price.cache_write_5m == Decimal("4.125")
    assert by["bedrock-us"].price.output == Decimal("16.50")
    # Platform model ids from [platforms.*.api_names]; a deployment's own price wins.
    assert by["bedrock-us"].api_name == "anthropic.claude-sonnet-4-6"
    assert by["vertex-eu"].api_name == "claude-sonnet-4-6"
    assert by["vertex-eu"].price.input == Decimal("2.50")
    assert by["vertex-eu"].price.output == model.price.output
    azure = DEPLOYED.get("gpt-4o").variants[0]
    assert azure.api_name == "gpt4o-prod" and azure.deployment.api_version == "2024-10-21"
    # A model that declares none is reached through its provider, as before.
    plain = DEPLOYED.get("gpt-4o-mini")
    assert plain.variants == (plain,) and deployment_name(plain) == "openai"


def test_a_reservation_covers_the_dearest_deployment() -> None:
    model = DEPLOYED.get("claude-sonnet-4-6")
    prompt = PromptCount(tokens=1000)
    worst = reach_worst_case(prompt, 100, [model])
    bedrock = next(v for v in model.variants if deployment_name(v) == "bedrock-us")
    assert worst == reach_worst_case(prompt, 100, [bedrock]) > reach_worst_case(
        prompt, 100, [model.variants[0]])


@pytest.mark.parametrize("extra, says", [
    ('[deployments.x]\nmodel = "nope"', r"not in \[models"),
    ('[deployments.x]\nmodel = "gpt-4o"\ntransport = "bedrock"\nregion = "r"', "cannot serve"),
    ('[deployments.x]\nmodel = "claude-haiku-4-5"\ntransport = "bedrock"', "needs region"),
    ('[deployments.x]\nmodel = "gpt-4o"\ntransport = "azure"\nbase_url = "https://a"',
     "api_version"),
    ('[deployments.x]\nmodel = "gpt-4o"\nweight = 0', "weight must be positive"),
    ('[models.pool]\nprovider = "openai_compatible"\ntier = "self-hosted"\ncontext = 8192\n'
     'pricing = "gpu_pool"', "needs base_url"),
])
def test_a_bad_deployment_is_refused_with_what_to_fix(extra: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        catalogue(extra)


def test_an_openai_compatible_server_is_configuration_priced_by_the_gpu_model() -> None:
    cat = catalogue('''
[models.llama-pool]
provider = "openai_compatible"
tier = "self-hosted"
context = 131072
api_name = "meta-llama/Llama-3.1-8B-Instruct"
base_url = "http://pool:8000/v1"
key_env = "POOL_KEY"
pricing = "gpu_pool"
''')
    pool = cat.get("llama-pool")
    (variant,) = pool.variants
    dep = variant.deployment
    assert (dep.transport, dep.base_url, dep.key_env) == ("openai_compatible",
                                                         "http://pool:8000/v1", "POOL_KEY")
    # The in-process engine's GPU cost model: same prices as the self-hosted vLLM model.
    assert pool.price == cat.get("sluice-tiny-llama").price
    assert pool.backend == "api" and pool.bound.factor == Decimal("1.5")


def _variants(weights: dict[str, float]) -> Any:
    extra = "".join(f'[deployments.{n}]\nmodel = "gpt-4o"\nweight = {w}\n'
                    for n, w in weights.items())
    return catalogue(extra).get("gpt-4o").variants


def test_stickiness_keeps_a_prefix_on_one_deployment_and_weights_hold_within_5_percent(
        ) -> None:
    variants = _variants({"a": 1, "b": 3, "c": 6})
    first = Counter(deployment_name(rank(variants, f"prefix-{i}")[0]) for i in range(1000))
    total = {"a": 1, "b": 3, "c": 6}
    for name, weight in total.items():
        # Within 5 percentage points of its weight's share (one sample of 1,000 prefixes: the
        # binomial spread is about 1-1.6 points; over 20,000 the shares are 9.4 / 30.6 / 59.9).
        share = first[name] / 1000
        assert abs(share - weight / 10) <= 0.05, (name, share)
    # The same prefix always lands on the same deployment, whatever the order declared in.
    for i in range(50):
        assert {deployment_name(rank(list(reversed(variants)), f"prefix-{i}")[0])
                for _ in range(3)} == {deployment_name(rank(variants, f"prefix-{i}")[0])}


def test_a_deployment_leaving_moves_only_its_own_prefixes() -> None:
    variants = _variants({"a": 1, "b": 1, "c": 1})
    before = {i: deployment_name(rank(variants, f"p{i}")[0]) for i in range(300)}
    after = {i: deployment_name(rank(variants, f"p{i}", cooling={"b"})[0]) for i in range(300)}
    moved = [i for i in before if before[i] != after[i]]
    assert moved and all(before[i] == "b" for i in moved)
    assert "b" not in set(after.values())


def test_cooling_goes_last_and_spent_out_leaves() -> None:
    variants = _variants({"a": 1, "b": 1})
    order = [deployment_name(v) for v in rank(variants, "k", cooling={"a", "b"})]
    assert sorted(order) == ["a", "b"]  # every one cooling: all still tried
    assert [deployment_name(v) for v in rank(variants, "k", cooling={"a"})] == ["b", "a"]
    assert [deployment_name(v) for v in rank(variants, "k", spent_out={"a"})] == ["b"]
    assert rank(variants, "k", spent_out={"a", "b"}) == []


def test_a_deployments_own_refusal_moves_on_and_the_requests_does_not() -> None:
    from models.domain.errors import ProviderPermanent, ProviderRetryable
    from workers.failover import moves_on

    assert moves_on(ProviderRetryable("503", provider="anthropic", status=503))
    for status in (401, 403, 404):  # its key, its access, its model id
        assert moves_on(ProviderPermanent("x", provider="anthropic", status=status))
    # A bad request fails on every deployment; a stream that broke after its first piece
    # must not be answered a second time.
    assert not moves_on(ProviderPermanent("x", provider="anthropic", status=400))
    assert not moves_on(ProviderPermanent("x", provider="anthropic", status=None,
                                          billed="unknown"))


def test_only_the_last_deployment_gets_the_full_retry_policy() -> None:
    from types import SimpleNamespace

    from workers.failover import policy_for
    from workers.providers.retry import RetryPolicy

    rt: Any = SimpleNamespace(retry=RetryPolicy(max_attempts=3))
    assert [policy_for(rt, i, 3).max_attempts for i in range(3)] == [1, 1, 3]
    assert policy_for(rt, 0, 1).max_attempts == 3
