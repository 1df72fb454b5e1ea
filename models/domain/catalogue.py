"""The model catalogue and price table, loaded explicitly from a versioned TOML file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from models.domain.deployments import Deployment, parse_deployments
from models.domain.errors import ConfigError, UnknownModelError
from models.domain.generation import EFFORTS
from models.domain.image_tokens import ImageRule
from models.domain.tokens import TokenBound

TIERS: tuple[str, ...] = ("cheap", "flagship", "self-hosted")
PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "google", "vllm", "gemini", "local",
                              "openai_compatible")
#: What a model produces: chat completions, or embedding vectors (models/domain/embedding.py).
KINDS: tuple[str, ...] = ("chat", "embedding")
#: What a model may declare it accepts (``capabilities = [...]`` in prices.toml).
CAPABILITIES: tuple[str, ...] = (
    "vision",              # image parts
    "tools",               # tool definitions and tool turns
    "forced_tool_choice",  # tool_choice required / a named function
    "json_mode",           # response_format json_object
    "json_schema",         # response_format json_schema (structured outputs)
    "logprobs",            # logprobs / top_logprobs
    "sampling",            # temperature other than the default, top_p
    "penalties",           # presence / frequency penalty, logit_bias
    "reasoning",           # reasoning_effort / thinking_budget (see reasoning_efforts)
    "verbosity",           # OpenAI's verbosity
    "prediction",          # OpenAI's predicted outputs
)
_MILLION = Decimal(1_000_000)
_PLACES = Decimal("1e-12")


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens for each billing class."""

    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    batch_discount: Decimal = Decimal("0")
    #: Explicit context-cache storage, USD per 1M tokens per hour (Gemini ``cachedContents``).
    storage_per_hour: Decimal = Decimal("0")


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry: who serves it, its tier, context window and prices."""

    name: str
    provider: str
    tier: str
    context: int
    price: ModelPrice
    min_cacheable_tokens: int = 1024
    api_name: str = ""
    kind: str = "chat"
    #: An embedding model's limits (None for chat models): see EmbeddingLimits.
    embedding: EmbeddingLimits | None = None
    #: What the model accepts (see CAPABILITIES); routing never sends it a request needing more.
    capabilities: frozenset[str] = frozenset()
    #: The reasoning efforts it takes, when it reasons.
    reasoning_efforts: tuple[str, ...] = ()
    #: The most output tokens (reasoning included) one answer may have.
    max_output: int = 4096
    #: How it counts an image's tokens.
    image_rule: ImageRule = ImageRule()
    #: How far the provider's own token count can exceed ours ([token_bounds.<provider>]).
    bound: TokenBound = TokenBound()
    #: An OpenAI-compatible server's base URL and the variable holding its key.
    base_url: str | None = None
    key_env: str | None = None
    #: The deployment this spec is the variant of (None: the provider's settings client).
    deployment: Deployment | None = None
    #: Its deployments, each a variant with its own api name and price (models/domain/
    #: deployments.py); empty: reached through its provider only.
    deployments: tuple[ModelSpec, ...] = ()

    @property
    def variants(self) -> tuple[ModelSpec, ...]:
        """The specs a request for this model may be sent as: its deployments, or itself."""
        return self.deployments or (self,)

    def can(self, capability: str) -> bool:
        """True when the model declares ``capability``."""
        return capability in self.capabilities

    #: Prompts of more than this many tokens are billed at ``long_price`` (0: one tier only).
    long_above: int = 0
    long_price: ModelPrice | None = None

    def price_for(self, prompt_tokens: int) -> ModelPrice:
        """The price tier a prompt of ``prompt_tokens`` is billed at (Gemini's >200k tier)."""
        if self.long_price is not None and prompt_tokens > self.long_above:
            return self.long_price
        return self.price

    @property
    def backend(self) -> str:
        """``gpu`` for the self-hosted pool, ``api`` for hosted providers."""
        return "gpu" if self.provider == "vllm" else "api"


@dataclass(frozen=True)
class EmbeddingLimits:
    """An embedding model's vector size and what one provider call may carry."""

    dimensions: int
    #: Whether the model accepts ``dimensions`` (shortened vectors, text-embedding-3-*).
    shortenable: bool = False
    max_item_tokens: int = 8192
    #: Items and tokens one provider call may carry (packing fills calls up to these).
    max_items: int = 2048
    max_call_tokens: int = 300_000
    #: How the provider counts (and bills) a text input: a tiktoken encoding, or ``bytes``
    #: (a word-piece model: bounded by its UTF-8 bytes). OpenAI's embedding models count
    #: with cl100k_base, not the o200k_base of its chat models.
    tokenizer: str = "o200k_base"


@dataclass(frozen=True)
class Catalogue:
    """Every model sluicegate may call, with the price-table version they were read from."""

    version: str
    models: dict[str, ModelSpec] = field(default_factory=dict)
    #: Platform model ids ([platforms.*.api_names]) to catalogue names (the stand-in's lookup).
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> ModelSpec:
        """The model called ``name``, or an error that lists the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise UnknownModelError(
                f"unknown model {name!r}; use a tier policy (auto, cheap, flagship, self-hosted) "
                f"or one of: {known}", field="model", model=name) from None

    def in_tier(self, tier: str) -> list[ModelSpec]:
        """Chat models of one tier, in file order."""
        return [m for m in self.models.values() if m.tier == tier and m.kind == "chat"]


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read the price file at ``path`` (default: the one shipped in ``models/data``)."""
    if path is None:
        text = resources.files("models.data").joinpath("prices.toml").read_text("utf-8")
        where = "models/data/prices.toml"
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read price file {where}: {exc}; set SLUICE_PRICES_PATH "
                              "to a readable file or unset it to use the shipped one") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"price file {where} is not valid TOML: {exc}") from None
    return parse_catalogue(data, where)


def parse_catalogue(data: dict[str, Any], where: str = "<data>") -> Catalogue:
    """Build a :class:`Catalogue` from the parsed TOML mapping, checking every entry."""
    version = str(data.get("version") or "")
    if not version:
        raise ConfigError(f"price file {where} has no 'version'; add one so ledger rows can "
                          "cite it")
    gpu = _gpu_prices(data.get("gpu_pool") or {}, where)
    bounds = {p: _bound(entry, f"{where} [token_bounds.{p}]")
              for p, entry in (data.get("token_bounds") or {}).items()}
    models: dict[str, ModelSpec] = {}
    pool = data.get("gpu_pool") or {}
    gpu_hour = (_dec(pool.get("gpu_hour_usd", "0"), "gpu_pool.gpu_hour_usd", where)
                if pool else None)
    for name, entry in (data.get("models") or {}).items():
        model = _model(name, entry, gpu, where, gpu_hour)
        bound = bounds.get(model.provider, TokenBound())
        if "tool_prompt_tokens" in entry:  # a model whose tool-use system prompt differs
            bound = replace(bound, tool_prompt=int(entry["tool_prompt_tokens"]))
        models[name] = replace(model, bound=bound)
    if not models:
        raise ConfigError(f"price file {where} lists no models under [models.*]")
    models = parse_deployments(data, models, gpu, where)
    aliases = {str(api): str(model) for platform in (data.get("platforms") or {}).values()
               for model, api in (platform.get("api_names") or {}).items() if model in models}
    return Catalogue(version=version, models=models, aliases=aliases)


def _dec(value: Any, what: str, where: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{where}: {what} = {value!r} is not a decimal number") from None
    if out < 0 or not out.is_finite():
        raise ConfigError(f"{where}: {what} must be a non-negative number, got {value!r}")
    return out


def _bound(entry: dict[str, Any], at: str) -> TokenBound:
    factor = _dec(entry.get("factor", "1"), "factor", at)
    if factor < 1:
        raise ConfigError(f"{at}: factor must be at least 1 (a bound, never below our count)")
    return TokenBound(factor=factor, per_piece=int(entry.get("per_piece", 0)),
                      per_message=int(entry.get("per_message", 0)),
                      tool_prompt=int(entry.get("tool_prompt_tokens", 0)))


def _gpu_prices(pool: dict[str, Any], where: str) -> ModelPrice | None:
    if not pool:
        return None
    per_hour = _dec(pool.get("gpu_hour_usd", "0"), "gpu_pool.gpu_hour_usd", where)
    prefill = _dec(pool.get("prefill_tokens_per_s", "1"), "gpu_pool.prefill_tokens_per_s", where)
    decode = _dec(pool.get("decode_tokens_per_s", "1"), "gpu_pool.decode_tokens_per_s", where)
    if prefill == 0 or decode == 0:
        raise ConfigError(f"{where}: gpu_pool throughputs must be positive")
    cached = _dec(pool.get("cached_prefill_factor", "0"), "gpu_pool.cached_prefill_factor", where)
    # price per 1M tokens = (USD per second) / (tokens per second) * 1M
    per_in = (per_hour / 3600 / prefill * _MILLION).quantize(_PLACES)
    per_out = (per_hour / 3600 / decode * _MILLION).quantize(_PLACES)
    return ModelPrice(input=per_in, cache_read=(per_in * cached).quantize(_PLACES),
                      cache_write_5m=per_in, cache_write_1h=per_in, output=per_out)


def _model(name: str, entry: dict[str, Any], gpu: ModelPrice | None, where: str,
           gpu_hour: Decimal | None = None) -> ModelSpec:
    at = f"{where} [models.{name}]"
    provider = str(entry.get("provider", ""))
    kind = str(entry.get("kind", "chat"))
    tier = str(entry.get("tier", "embedding" if kind == "embedding" else ""))
    if provider not in PROVIDERS:
        raise ConfigError(f"{at}: provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if kind not in KINDS:
        raise ConfigError(f"{at}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "embedding":
        return _embedding_model(name, entry, gpu_hour, at)
    if tier not in TIERS:
        raise ConfigError(f"{at}: tier {tier!r} is not one of {', '.join(TIERS)}")
    context = int(entry.get("context", 0))
    if context <= 0:
        raise ConfigError(f"{at}: context must be a positive token count")
    if (provider == "vllm" and "input" not in entry) or entry.get("pricing") == "gpu_pool":
        if gpu is None:
            raise ConfigError(f"{at}: a self-hosted model needs [gpu_pool] prices or its own")
        price = gpu
    else:
        price = _price(entry, at)
    long_price, long_above = None, 0
    long = entry.get("long_context")
    if long is not None:
        long_above = int(long.get("above", 0))
        if not 0 < long_above < context:
            raise ConfigError(f"{at}: long_context.above must be a token count within context")
        # Unset classes of the long tier keep the short tier's batch discount and storage.
        long_price = _price({"batch_discount": entry.get("batch_discount", "0"),
                             "cache_storage_per_hour": entry.get("cache_storage_per_hour", "0"),
                             **long}, f"{at} long_context")
    caps = frozenset(str(c) for c in entry.get("capabilities", ()))
    if caps - set(CAPABILITIES):
        raise ConfigError(f"{at}: unknown capabilities {sorted(caps - set(CAPABILITIES))}; "
                          f"use any of {', '.join(CAPABILITIES)}")
    efforts = tuple(str(e) for e in entry.get("reasoning_efforts", ()))
    if set(efforts) - set(EFFORTS) or (bool(efforts) != ("reasoning" in caps)):
        raise ConfigError(f"{at}: reasoning_efforts must list some of {', '.join(EFFORTS)} "
                          "exactly when capabilities include 'reasoning'")
    max_output = int(entry.get("max_output", min(4096, context)))
    if not 0 < max_output <= context:
        raise ConfigError(f"{at}: max_output must be a positive token count within context")
    return ModelSpec(name=name, provider=provider, tier=tier, context=context, price=price,
                     base_url=entry.get("base_url"), key_env=entry.get("key_env"),
                     min_cacheable_tokens=int(entry.get("min_cacheable_tokens", 1024)),
                     api_name=str(entry.get("api_name", name)), capabilities=caps,
                     reasoning_efforts=efforts, max_output=max_output,
                     image_rule=_image_rule(entry.get("images"), "vision" in caps, at),
                     long_above=long_above, long_price=long_price)

def _embedding_model(name: str, entry: dict[str, Any], gpu_hour: Decimal | None,
                     at: str) -> ModelSpec:
    """An embedding model: input tokens only; a self-hosted one priced by the GPU cost model
    at its own throughput (``embed_tokens_per_s``: embedding is prefill only)."""
    provider = str(entry["provider"])
    if provider == "local" and "input" not in entry:
        if gpu_hour is None:
            raise ConfigError(f"{at}: a self-hosted model needs [gpu_pool] prices or its own")
        speed = _dec(entry.get("embed_tokens_per_s", "0"), "embed_tokens_per_s", at)
        if speed == 0:
            raise ConfigError(f"{at}: a self-hosted embedding model needs embed_tokens_per_s "
                              "(its measured throughput on the pool's GPU)")
        # The pool's price per GPU-second over the tokens a second embeds, per 1M tokens.
        inp = (gpu_hour / 3600 / speed * _MILLION).quantize(_PLACES)
    else:
        inp = _dec(entry.get("input"), "input", at)
    dims = int(entry.get("dimensions", 0))
    if dims <= 0:
        raise ConfigError(f"{at}: an embedding model needs its vector size (dimensions)")
    limits = EmbeddingLimits(
        dimensions=dims, shortenable=bool(entry.get("shortenable", False)),
        max_item_tokens=int(entry.get("max_item_tokens", 8192)),
        max_items=int(entry.get("max_items", 2048)),
        max_call_tokens=int(entry.get("max_call_tokens", 300_000)),
        tokenizer=_tokenizer(entry, provider, at))
    price = ModelPrice(input=inp, cache_read=inp, cache_write_5m=inp, cache_write_1h=inp,
                       output=Decimal(0),
                       batch_discount=_dec(entry.get("batch_discount", "0"), "batch_discount",
                                           at))
    return ModelSpec(name=name, provider=provider, tier="embedding",
                     context=limits.max_item_tokens, price=price,
                     api_name=str(entry.get("api_name", name)), kind="embedding",
                     embedding=limits)


def _tokenizer(entry: dict[str, Any], provider: str, at: str) -> str:
    """The embedding model's ``tokenizer`` (default: ``bytes`` self-hosted, o200k_base)."""
    from models.domain.tokens import TOKENIZERS

    name = str(entry.get("tokenizer", "bytes" if provider == "local" else "o200k_base"))
    if name not in TOKENIZERS:
        raise ConfigError(f"{at}: tokenizer {name!r} is not one of {', '.join(TOKENIZERS)}")
    return name


def _image_rule(raw: Any, vision: bool, at: str) -> ImageRule:
    """``images = {rule = "tiles", base = 85, tile = 170}`` (or patches / area)."""
    if not vision:
        return ImageRule()
    if not isinstance(raw, dict) or raw.get("rule") not in ("tiles", "patches", "area", "crops"):
        raise ConfigError(f"{at}: a vision model needs images = {{rule = \"tiles\" | "
                          "\"patches\" | \"area\" | \"crops\", ...}}: how it counts an "
                          "image's tokens")
    return ImageRule(kind=str(raw["rule"]), base=int(raw.get("base", 85)),
                     tile=int(raw.get("tile", 170)),
                     multiplier=float(raw.get("multiplier", 1.0)))


def _price(entry: dict[str, Any], at: str) -> ModelPrice:
    inp = _dec(entry.get("input"), "input", at)
    return ModelPrice(
        input=inp,
        cache_read=_dec(entry.get("cache_read", inp), "cache_read", at),
        cache_write_5m=_dec(entry.get("cache_write_5m", inp), "cache_write_5m", at),
        cache_write_1h=_dec(entry.get("cache_write_1h", inp), "cache_write_1h", at),
        output=_dec(entry.get("output"), "output", at),
        batch_discount=_dec(entry.get("batch_discount", "0"), "batch_discount", at),
        storage_per_hour=_dec(entry.get("cache_storage_per_hour", "0"),
                              "cache_storage_per_hour", at),
    )
