"""Settings from ``SLUICE_*`` environment variables, read only at entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.domain.cache_policy import FeatureCachePolicy
from models.domain.quality import QualitySettings


class BrokerSettings(BaseModel):
    """Celery transport and result store; the defaults run in-process with no server."""

    url: str = "memory://"
    result_backend: str = "cache+memory://"
    #: Seconds a result is kept in the result store.
    result_expires: int = 3600
    #: Prefix for every Redis key of the broker and result store (a shared Redis stays tidy).
    key_prefix: str = ""
    #: A message unclaimed this long after it was sent is re-sent (a Redis broker can lose a
    #: message popped by a worker killed at the wrong moment; the ledger claim dedupes).
    resend_after_s: float = 300.0
    #: Seconds between a worker's renewals of the claims and reservations of its live runs. A
    #: claim whose heartbeat is older than CLAIM_TTL_BEATS of these belongs to a dead worker
    #: and may be taken over; a live run's never is, however long its call takes.
    heartbeat_s: float = Field(default=5.0, gt=0)
    #: Seconds a budget reservation's lease adds to its lane's time limit. The heartbeat
    #: renews a live run's reservation by the same lease, so only a dead worker's lapses.
    lease_margin_s: float = Field(default=60.0, ge=0)
    #: Seconds before Redis redelivers an unacked message (a killed worker's); None: derived
    #: from the longest lane time limit, so a running task is never delivered twice.
    visibility_timeout_s: int | None = None
    #: Bound on a producer's wait for a down broker: connect timeout and publish retries.
    connect_timeout_s: float = 2.0
    publish_max_retries: int = 2
    #: Producers also emit Celery's ``task-sent`` event, so Flower lists tasks still queued.
    #: Off by default: it is one more Redis publish per request on the hot path, and queue
    #: depth is in Flower's broker view and `sluice queues status` anyway.
    send_sent_events: bool = False
    #: Workers send task events from start. Off by default: three Redis publishes per task,
    #: measured at ~1.7 ms of worker CPU per request (ops/bench); Flower switches events on in
    #: the workers it watches (its --enable_events, on by default), so it shows tasks anyway.
    task_events: bool = False
    #: RabbitMQ only: "quorum" queues (replicated, survive a broker restart, need RabbitMQ
    #: 3.8+) or "classic" ones (declared with ``x-max-priority``, so the interactive lane's
    #: priority orders messages inside a shared queue; a single node's disk only).
    queue_type: Literal["quorum", "classic"] = "quorum"
    #: The Redis for side state (cancel marks, token streams, shed tallies, batch placements)
    #: when the broker is not Redis; None: the broker's URL if it is Redis, else the result
    #: store's if that is Redis.
    state_redis_url: str | None = None

    def is_redis(self) -> bool:
        """Whether the broker is a Redis server (not RabbitMQ, not embedded)."""
        return self.url.startswith(("redis://", "rediss://"))

    def is_amqp(self) -> bool:
        """Whether the broker is RabbitMQ (kombu's py-amqp transport)."""
        return self.url.startswith(("amqp://", "amqps://", "pyamqp://"))

    def state_url(self) -> str | None:
        """The Redis that holds side state next to the queue (None: none, in-process only)."""
        if self.state_redis_url:
            return self.state_redis_url
        for url in (self.url, self.result_backend):
            if url.startswith(("redis://", "rediss://")):
                return url
        return None


class DatabaseSettings(BaseModel):
    """Where the ledger lives: PostgreSQL in production, SQLite for the embedded default."""

    url: str = "sqlite:///.sluice/ledger.db"
    pool_size: int = 5
    echo: bool = False


class CacheSettings(BaseModel):
    """Response cache store; no ``redis_url`` means an in-process store.

    In production give the cache a Redis of its own with a memory limit and an eviction
    policy (docker-compose's ``redis-cache``): on the broker's Redis (``noeviction``) a growing
    cache would fill the memory the queue needs, and with eviction on it could drop messages.
    """

    redis_url: str | None = None
    key_prefix: str = "sluice:rc:"
    default_ttl_s: int = 3600
    enabled: bool = True
    #: Per-feature policies by feature name; ``"*"`` applies to features not listed.
    features: dict[str, FeatureCachePolicy] = Field(default_factory=dict)
    #: Redis socket timeouts: past this the lookup is a miss (the cache fails open).
    timeout_ms: float = 100.0
    #: Values larger than this (after compression) are not stored.
    max_value_bytes: int = 512 * 1024
    #: Entries kept per scope; the soonest to expire are evicted first.
    max_entries_per_scope: int = 10_000
    #: How long identical concurrent misses wait for the first one's answer (0: no single-flight).
    single_flight_wait_s: float = 15.0


class ProviderSettings(BaseModel):
    """Hosted provider access. No key: the local stand-in answers instead."""

    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    #: Google Gemini: a Gemini API key (or a Vertex AI express key), or the stand-in's URL.
    google_api_key: SecretStr | None = None
    google_base_url: str | None = None
    #: Vertex AI instead of the Gemini API: the project and region (Google credentials).
    google_vertex: bool = False
    google_project: str | None = None
    google_location: str | None = None
    #: Gemini explicit context caches (cachedContents): their TTL, and whether the worker may
    #: create them at all (the reuse rule decides per prefix; off: implicit caching only).
    gemini_cache_ttl_s: float = Field(default=3600.0, gt=60)
    gemini_explicit_caching: bool = True
    #: A prefix with no request for this long is cold: its cache is deleted (default TTL/4).
    gemini_cache_cold_after_s: float | None = Field(default=None, gt=0)
    #: Seconds before one provider call is abandoned (then retried per policy).
    timeout_s: float = 60.0
    #: Attempts per call, the first included; the SDKs' own retries are always off.
    max_attempts: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    #: Ordered fallbacks per model, e.g. {"gpt-4o": ["claude-sonnet-4-6"]}.
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    #: Seconds a deployment that errored or rate-limited is skipped (a retry-after it sent
    #: wins); shared by every worker through Redis.
    deployment_cooldown_s: float = Field(default=30.0, gt=0)
    #: Anthropic prompt-cache TTL of the static prefix: 5m writes cost 1.25x, 1h writes 2x.
    cache_ttl: Literal["5m", "1h"] = "5m"
    #: Per-feature TTL, for prefixes reused less often than every five minutes.
    cache_ttl_by_feature: dict[str, Literal["5m", "1h"]] = Field(default_factory=dict)

    def ttl_for(self, feature: str) -> str:
        """The prompt-cache TTL of ``feature``."""
        return self.cache_ttl_by_feature.get(feature, self.cache_ttl)


class LaneSettings(BaseModel):
    """Per-lane queue behaviour."""

    priority: int = 5
    soft_time_limit_s: float = 120.0
    time_limit_s: float = 150.0
    #: How long a GPU worker (or the batch lane) waits to fill a batch before sending it.
    batch_timeout_ms: float = 0.0
    batch_max: int = 32
    #: A request that waited in the queue longer than this (seconds; 0: no limit) is not run:
    #: its caller has given up, so paying a provider for its answer would be waste. A default
    #: for callers that give no timeout of their own (``ChatRequest.timeout_s``), not a cap.
    queue_timeout_s: float = Field(default=0.0, ge=0)


#: Each lane's defaults. A setting given for one field of a lane (SLUICE_LANES__INTERACTIVE__
#: QUEUE_TIMEOUT_S) keeps the lane's other defaults rather than LaneSettings' generic ones.
_LANE_DEFAULTS: dict[str, dict[str, Any]] = {
    "interactive": {"priority": 9, "soft_time_limit_s": 60, "time_limit_s": 75,
                    "batch_timeout_ms": 0.0, "batch_max": 64, "queue_timeout_s": 30.0},
    "async": {"priority": 1, "soft_time_limit_s": 600, "time_limit_s": 660,
              "batch_timeout_ms": 250.0, "batch_max": 64, "queue_timeout_s": 0.0},
}


class LanesSettings(BaseModel):
    """The interactive lane answers now; the async lane trades latency for cost."""

    interactive: LaneSettings = LaneSettings(**_LANE_DEFAULTS["interactive"])
    async_: LaneSettings = Field(
        default=LaneSettings(**_LANE_DEFAULTS["async"]),
        alias="async", validation_alias=AliasChoices("async", "async_"))

    @model_validator(mode="before")
    @classmethod
    def _over_lane_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, lane in (("interactive", "interactive"), ("async", "async"),
                          ("async_", "async")):
            if isinstance(out.get(key), dict):
                out[key] = {**_LANE_DEFAULTS[lane], **out[key]}
        return out

    def get(self, lane: str) -> LaneSettings:
        """Settings of ``lane`` by its public name."""
        return self.async_ if lane == "async" else self.interactive


class RoutingSettings(BaseModel):
    """Which catalogue model serves each tier, and what the no-lever baseline is."""

    cheap_model: str = "gpt-4o-mini"
    flagship_model: str = "gpt-4o"
    self_hosted_model: str = "sluice-tiny-llama"
    baseline_model: str = "gpt-4o"
    #: Score threshold of the default router: at or above it, the cheap tier is enough.
    cheap_threshold: float = 0.5
    #: The router of features with no policy of their own: heuristic, learned or random.
    default_router: str = "heuristic"
    #: Artifact of the learned router (default: the one shipped in ops/router/artifacts).
    router_artifact: str | None = None
    #: Per-feature policies, e.g. [{"feature": "seo", "forced_tier": "flagship"},
    #: {"feature": "faq", "router": "learned", "target_flagship_share": 0.2}].
    policies: list[dict[str, Any]] = Field(default_factory=list)
    #: Per-feature model ladders (scheduler/router/ladder.py), e.g. {"coding": {"rungs":
    #: ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"], "target": 0.6}}; "*" is
    #: every other feature's. Features without one use the tiers above as their ladder.
    ladders: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: A JSON file of ladders that wins over ``ladders`` and is re-read when it changes
    #: (`sluice ladders set` writes it): operators change ladders without a deploy.
    ladders_path: Path | None = None

    def model_for(self, tier: str) -> str:
        """The configured model of ``tier``."""
        return {"cheap": self.cheap_model, "flagship": self.flagship_model,
                "self-hosted": self.self_hosted_model}[tier]


class SheddingSettings(BaseModel):
    """How the HTTP front door sheds interactive load the workers cannot take (per process)."""

    enabled: bool = True
    #: Queue wait (enqueue to worker start) that counts as a standing queue when even the
    #: shortest wait over an interval is above it.
    target_wait_ms: float = Field(default=100.0, gt=0)
    interval_ms: float = Field(default=500.0, gt=0)
    #: Hard cap on interactive requests in flight per front-door process.
    max_inflight: int = Field(default=2048, ge=1)
    #: The limit never falls below this, so answers keep coming to measure the queue by.
    min_inflight: int = Field(default=8, ge=1)


class GpuSettings(BaseModel):
    """The GPU worker's vLLM engine."""

    model_path: str | None = None
    max_num_seqs: int = 64
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    kv_cache_memory_bytes: int = 512 * 1024 * 1024
    #: vLLM load format; "dummy" gives random weights for any model config (no download).
    load_format: str = "auto"
    #: The GPU worker process's GIL switch interval (ms; 0: Python's 5 ms). Its one Celery
    #: consumer thread takes each message in many short I/O steps, each waiting for the GIL
    #: that busy task threads and the engine's output loop hold for a whole interval
    #: (ops.bench.gpu_batching --switch-interval-ms 0,0.5 compares).
    switch_interval_ms: float = Field(default=0.5, ge=0)
    #: Share of ``max_num_seqs`` the async lane leaves free for interactive requests. vLLM
    #: admits no new request, whatever its priority, while every slot runs: an async backlog
    #: that took them all would make interactive requests wait for async ones to finish.
    interactive_reserve: float = Field(default=0.25, ge=0, lt=1)

    @property
    def async_slots(self) -> int:
        """How many async-lane requests may run in the engine at once (at least one)."""
        return max(1, int(self.max_num_seqs * (1 - self.interactive_reserve)))


class BatchSettings(BaseModel):
    """The async lane on provider Batch APIs (50 % off): opt in globally, per feature or request.

    A request opts in with the tag ``batch="true"`` (and out with ``"false"``); only async-lane
    requests routed to a hosted provider (OpenAI, Anthropic) are ever batched.
    """

    #: Batch every eligible async request.
    enabled: bool = False
    #: Features whose async requests are batched even when ``enabled`` is off.
    features: list[str] = Field(default_factory=list)
    #: Seconds between polls of a submitted batch (real providers take minutes to hours).
    poll_interval_s: float = 30.0
    #: How long a task waits for its batch; 0 means the async lane's soft time limit less 10 s.
    max_wait_s: float = 0.0


class PrivacySettings(BaseModel):
    """Prompt and answer text: never stored, except for features that opt in, for a limited time.

    ``SLUICE_PRIVACY__STORE_TEXT_FEATURES='["support-faq"]'`` keeps the text of that feature's
    requests for ``SLUICE_PRIVACY__RETENTION_DAYS``; a beat job deletes it afterwards.
    """

    store_text_features: list[str] = Field(default_factory=list)
    retention_days: int = Field(default=30, ge=1, le=3650)
    #: Seconds between purges of expired text.
    purge_interval_s: float = 3600.0

    def stores_text(self, feature: str) -> bool:
        """Whether ``feature`` opted in to keeping its prompt and answer text."""
        return feature in self.store_text_features


class EmbeddingSettings(BaseModel):
    """Which embedding model ``auto`` means, per feature, and how long item vectors are kept."""

    #: The model ``model: auto`` embeds with, for features not listed in ``features``.
    model: str = "text-embedding-3-small"
    #: Per-feature embedding model: ``{"search": "all-minilm-l6-v2"}``.
    features: dict[str, str] = Field(default_factory=dict)
    #: How long a cached item vector lives (a vector of a fixed model and input never changes).
    cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=1)
    #: Pack items of concurrent requests into shared provider calls on lanes that wait to fill
    #: a batch (``batch_timeout_ms`` > 0: the async lane by default).
    pack: bool = True

    def model_for(self, feature: str) -> str:
        """The embedding model ``auto`` means for ``feature``."""
        return self.features.get(feature, self.model)


class Settings(BaseSettings):
    """Everything configurable, in nested groups (``SLUICE_BROKER__URL`` and so on)."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", env_nested_delimiter="__",
                                      extra="ignore", populate_by_name=True)

    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    cache: CacheSettings = CacheSettings()
    providers: ProviderSettings = ProviderSettings()
    lanes: LanesSettings = LanesSettings()
    shedding: SheddingSettings = SheddingSettings()
    routing: RoutingSettings = RoutingSettings()
    gpu: GpuSettings = GpuSettings()
    batch: BatchSettings = BatchSettings()
    privacy: PrivacySettings = PrivacySettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    #: Shadow sampling, judges and the quality floor per feature (models/domain/quality.py).
    quality: QualitySettings = QualitySettings()
    prices_path: Path | None = None
    #: Where embedded-default state (SQLite ledger, stand-in logs) goes.
    home: Path = Path(".sluice")


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment (or ``env``), plus explicit overrides.

    Provider keys are also taken from the providers' own variables (``OPENAI_API_KEY``,
    ``ANTHROPIC_API_KEY``) when the ``SLUICE_`` ones are unset.
    """
    import os

    source = dict(os.environ if env is None else env)
    settings = Settings(**overrides) if env is None else _from_mapping(source, overrides)
    prov = settings.providers
    updates: dict[str, Any] = {}
    if prov.openai_api_key is None and source.get("OPENAI_API_KEY"):
        updates["openai_api_key"] = SecretStr(source["OPENAI_API_KEY"])
    if prov.anthropic_api_key is None and source.get("ANTHROPIC_API_KEY"):
        updates["anthropic_api_key"] = SecretStr(source["ANTHROPIC_API_KEY"])
    google = source.get("GEMINI_API_KEY") or source.get("GOOGLE_API_KEY")
    if prov.google_api_key is None and google:
        updates["google_api_key"] = SecretStr(google)
    if updates:
        settings = settings.model_copy(update={"providers": prov.model_copy(update=updates)})
    return settings


def _from_mapping(env: dict[str, str], overrides: dict[str, Any]) -> Settings:
    import os
    from unittest import mock

    # pydantic-settings reads os.environ; scope an explicit mapping to this one construction.
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings(**overrides)
