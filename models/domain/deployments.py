"""Deployments: the ways one catalogue model is reached (platform, region, key), weighted."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from models.domain.errors import ConfigError

if TYPE_CHECKING:
    from models.domain.catalogue import ModelPrice, ModelSpec

#: How a deployment is called: a provider's own API, a cloud platform's, or any server that
#: speaks OpenAI's chat-completions format (vLLM, SGLang, TGI, hosted OpenAI-compatible APIs).
TRANSPORTS: tuple[str, ...] = ("openai", "anthropic", "google", "vllm", "bedrock", "vertex",
                               "azure", "openai_compatible")
#: Which catalogue providers each transport can serve (Claude on Bedrock / Vertex, GPT on Azure).
SERVES: dict[str, tuple[str, ...]] = {
    "openai": ("openai",), "azure": ("openai",), "anthropic": ("anthropic",),
    "bedrock": ("anthropic",), "vertex": ("anthropic",), "google": ("google",),
    "vllm": ("vllm",), "openai_compatible": ("openai_compatible", "openai", "vllm")}
_PRICE_KEYS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


@dataclass(frozen=True)
class Deployment:
    """One way to reach a model: its transport, where and with which key, and its share."""

    name: str
    model: str
    transport: str
    weight: float = 1.0
    #: The model's name on this deployment (a Bedrock model id, an Azure deployment name).
    api_name: str = ""
    base_url: str | None = None
    #: The environment variable holding its key (an OpenAI-compatible server's, Azure's, or
    #: a Vertex access token); Bedrock signs with the AWS credential chain instead.
    key_env: str | None = None
    region: str | None = None
    project: str | None = None
    #: Azure OpenAI's ``api-version``.
    api_version: str | None = None
    #: USD a UTC day this deployment may spend; past it, it leaves routing (None: no limit).
    daily_budget: Decimal | None = None
    #: The implicit deployment of a model that declares none (the settings' provider client).
    implicit: bool = False


def parse_deployments(data: dict[str, Any], models: dict[str, ModelSpec],
                      gpu: ModelPrice | None, where: str) -> dict[str, ModelSpec]:
    """``models`` with their deployments attached: each declared ``[deployments.<name>]``
    becomes a variant of its model's spec (its own api name and platform price); a model
    that declares none is reached through its provider as before."""
    platforms = data.get("platforms") or {}
    declared: dict[str, list[ModelSpec]] = {}
    for name, entry in (data.get("deployments") or {}).items():
        at = f"{where} [deployments.{name}]"
        base = models.get(str(entry.get("model", "")))
        if base is None:
            raise ConfigError(f"{at}: model {entry.get('model')!r} is not in [models.*]")
        dep = _deployment(name, entry, base, at)
        declared.setdefault(base.name, []).append(
            _variant(base, dep, entry, platforms.get(dep.transport) or {}, gpu, at))
    out: dict[str, ModelSpec] = {}
    for name, spec in models.items():
        variants = tuple(declared.get(name, ()))
        if not variants and spec.provider == "openai_compatible":
            if not spec.base_url:
                raise ConfigError(f"{where} [models.{name}]: an openai_compatible model needs "
                                  "base_url (and key_env, the variable holding its key), or "
                                  "[deployments.*] of its own")
            variants = (replace(spec, deployment=Deployment(
                name=name, model=name, transport="openai_compatible", api_name=spec.api_name,
                base_url=spec.base_url, key_env=spec.key_env, implicit=True)),)
        out[name] = replace(spec, deployments=variants)
    return out


def _deployment(name: str, entry: dict[str, Any], base: ModelSpec, at: str) -> Deployment:
    transport = str(entry.get("transport", base.provider))
    if transport not in TRANSPORTS:
        raise ConfigError(f"{at}: transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if base.provider not in SERVES[transport]:
        raise ConfigError(f"{at}: transport {transport} cannot serve {base.name} (a "
                          f"{base.provider} model)")
    weight = float(entry.get("weight", 1))
    if not weight > 0:
        raise ConfigError(f"{at}: weight must be positive (remove the deployment instead)")
    if transport in ("azure", "openai_compatible") and not entry.get("base_url"):
        raise ConfigError(f"{at}: a {transport} deployment needs base_url")
    if transport == "azure" and not entry.get("api_version"):
        raise ConfigError(f"{at}: an azure deployment needs api_version (e.g. 2024-10-21)")
    if transport in ("bedrock", "vertex") and not entry.get("region"):
        raise ConfigError(f"{at}: a {transport} deployment needs region")
    if transport == "vertex" and not entry.get("project"):
        raise ConfigError(f"{at}: a vertex deployment needs project")
    budget = entry.get("daily_budget_usd")
    return Deployment(
        name=name, model=base.name, transport=transport, weight=weight,
        api_name=str(entry.get("api_name", "")), base_url=entry.get("base_url"),
        key_env=entry.get("key_env"), region=entry.get("region"),
        project=entry.get("project"), api_version=entry.get("api_version"),
        daily_budget=None if budget is None else Decimal(str(budget)))


def _variant(base: ModelSpec, dep: Deployment, entry: dict[str, Any],
             platform: dict[str, Any], gpu: ModelPrice | None, at: str) -> ModelSpec:
    """The model as this deployment serves it: its api name, and its platform's price (the
    platform's factor, its regional factor for a regional endpoint, or the deployment's own
    prices; ``pricing = "gpu_pool"`` for a self-hosted pool)."""
    api_name = (dep.api_name or str((platform.get("api_names") or {}).get(base.name, ""))
                or base.api_name)
    if dep.transport in ("bedrock", "vertex") and not api_name:
        raise ConfigError(f"{at}: no api_name for {base.name} on {dep.transport}")
    price = base.price
    if entry.get("pricing") == "gpu_pool":
        if gpu is None:
            raise ConfigError(f"{at}: pricing = \"gpu_pool\" needs a [gpu_pool] table")
        price = gpu
    factor = Decimal(str(platform.get("price_factor", "1")))
    if entry.get("regional"):
        factor *= Decimal(str(platform.get("regional_factor", "1")))
    if factor != 1:
        price = replace(price, **{k: (getattr(price, k) * factor).quantize(Decimal("1e-12"))
                                  for k in _PRICE_KEYS})
    own = {k: Decimal(str(entry[k])) for k in _PRICE_KEYS if k in entry}
    if own:
        price = replace(price, **own)
    return replace(base, api_name=api_name, price=price,
                   deployment=replace(dep, api_name=api_name))


def deployment_name(spec: ModelSpec) -> str:
    """What the ledger records: the deployment's name, or the provider for the implicit one."""
    return spec.deployment.name if spec.deployment is not None else spec.provider


def rank(variants: Sequence[ModelSpec], key: str, *, cooling: Collection[str] = (),
         spent_out: Collection[str] = ()) -> list[ModelSpec]:
    """The order to try ``variants`` for a request whose static prefix hashes to ``key``.

    Weighted rendezvous hashing: each deployment scores ``-weight / ln(u)``, ``u`` a uniform
    hash of (key, deployment); the highest wins. A prefix keeps its deployment while the set
    of healthy ones holds (its provider cache stays warm), the shares across prefixes follow
    the weights, and a deployment leaving moves only its own prefixes. Cooling ones go last
    (still tried when every other one fails); those past their own budget not at all.
    """
    live = [v for v in variants if deployment_name(v) not in spent_out]

    def score(spec: ModelSpec) -> float:
        name = deployment_name(spec)
        digest = hashlib.blake2b(f"{key}\x00{name}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2.0 ** 64
        weight = spec.deployment.weight if spec.deployment is not None else 1.0
        return -weight / math.log(u)

    ordered = sorted(live, key=score, reverse=True)
    return ([v for v in ordered if deployment_name(v) not in cooling]
            + [v for v in ordered if deployment_name(v) in cooling])
