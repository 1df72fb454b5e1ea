"""Per-process resources of a worker (providers, ledger, levers), built once on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.domain.catalogue import Catalogue, ModelSpec, load_catalogue
from models.domain.errors import ConfigError
from models.domain.settings import Settings
from scheduler.hooks import Admission, ResponseCache
from scheduler.route import baseline_model
from workers.ledger_writes import refused, write_attempt, write_attempts
from workers.providers.base import Provider
from workers.providers.retry import RetryPolicy

_LOCK = threading.Lock()
#: Key a placeholder key uses when a stand-in base URL is set and no real key is.
STANDIN_KEY = "sk-sluice-standin"


@dataclass
class WorkerRuntime:
    """Everything a task needs, built from the settings the worker's app carries."""

    settings: Settings
    catalogue: Catalogue
    sessions: sessionmaker[Session]
    retry: RetryPolicy
    admission: Admission | None = None
    cache: ResponseCache | None = None
    #: The producer's record of sent messages (queues.inflight), forgotten once final.
    inflight: Any = None
    #: Cancel marks callers set on queued async requests (queues.cancel), or None.
    cancels: Any = None
    #: Redis client streamed answers are written with (queues.token_stream), or None.
    tokens: Any = None
    #: Rate limits (scheduler.ratelimit): admits deferred async requests, corrects tokens.
    limiter: Any = None
    #: Gemini explicit context caches of this process (workers.context_cache), built on use.
    context_caches: Any = None
    providers: dict[str, Provider] = field(default_factory=dict)
    #: Deployment cooldowns and budgets (workers.deployment_health), built on first use.
    deployment_health: Any = None
    _claimer: Any = field(default=None, repr=False)
    _heartbeat: Any = field(default=None, repr=False)
    _attempter: Any = field(default=None, repr=False)
    #: Group commits (workers.group_commit) of the claim and the sent attempt row: requests
    #: that arrive together (a GPU worker's burst) share one statement each.
    _claims: Any = field(default=None, repr=False)
    _attempts: Any = field(default=None, repr=False)

    def begin_attempt(self, values: dict[str, Any],
                      hold: tuple[str, datetime] | None = None) -> int | None:
        """Write a provider attempt as ``sent`` and return its id: on PostgreSQL one durable
        autocommit round trip (no BEGIN / COMMIT), shared by the attempts other threads write
        at the same time (a group commit), elsewhere a short transaction. With
        ``hold`` (reservation id, renew until): only while that reservation is open (None
        when it lapsed: nothing written, so nothing may be sent)."""
        engine = self.sessions.kw.get("bind")
        if engine is None or engine.dialect.name != "postgresql":
            with self.session() as s:
                return write_attempt(s, (values, hold))
        if self._attempts is None:
            with _LOCK:
                if self._attempts is None:
                    from models.db.engine import autocommit_engine
                    from workers.group_commit import GroupCommit

                    self._attempter = autocommit_engine(
                        engine, self.settings.database.pool_size, durable=True)
                    self._attempts = GroupCommit(
                        lambda item: self._on_attempter(lambda c: write_attempt(c, item)),
                        lambda items: self._on_attempter(lambda c: write_attempts(c, items)),
                        writers=2, alone_after=refused)
        return self._attempts.submit((values, hold))

    def _on_attempter(self, write: Callable[[Any], Any]) -> Any:
        """``write(connection)`` on the durable autocommit engine of the attempt rows."""
        from sqlalchemy.exc import DBAPIError

        tries = self.settings.database.pool_size * 2 + 1
        for left in range(tries, 0, -1):
            try:
                with self._attempter.connect() as conn:
                    return write(conn)
            except DBAPIError as exc:
                # Pooled connections a database restart dropped: each fails once, then a
                # fresh one is made (no pre-ping: it would cost every attempt a round trip).
                if not exc.connection_invalidated or left == 1:
                    raise
        raise AssertionError("unreachable")

    def heartbeat(self) -> Any:
        """This process's heartbeat (workers.heartbeat.Heartbeat), built on first use."""
        if self._heartbeat is None:
            with _LOCK:
                if self._heartbeat is None:
                    from workers.heartbeat import Heartbeat

                    self._heartbeat = Heartbeat(
                        self.sessions, interval_s=self.settings.broker.heartbeat_s,
                        lease=self.lease)
        return self._heartbeat

    def lease(self, lane: str) -> Any:
        """How long a live run's reservation is renewed for (a timedelta): past a missed beat
        or two and the lane's time limit, as the admission lease is."""
        from models.domain.budget import reservation_lease

        return reservation_lease(self.settings.lanes.get(lane).time_limit_s,
                                 self.settings.broker.lease_margin_s)

    @property
    def baseline(self) -> ModelSpec:
        """The no-lever model that prices the baseline."""
        return baseline_model(self.catalogue, self.settings.routing)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A ledger session that commits on success and rolls back on error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def claim(self, row: dict[str, Any], lease_s: float, sent_at: float | None = None) -> str:
        """Claim a request before its provider call: ``claimed``, ``resumed``, ``retried``,
        ``done``, ``ended``, ``running`` or ``foreign`` (models.db.ledger.claim); ``sent_at``:
        when the message was sent (its envelope's ``enqueued_at``).

        On PostgreSQL the common case (nobody has the request id yet) is one autocommit INSERT
        with asynchronous commit: one round trip instead of four (BEGIN, SET, INSERT, COMMIT).
        Only an existing row takes the full path in a transaction.
        """
        from models.db import ledger

        engine = self.sessions.kw.get("bind")
        if engine is not None and engine.dialect.name == "postgresql":
            if self._claims is None:
                with _LOCK:
                    if self._claims is None:
                        from models.db.engine import autocommit_engine
                        from workers.group_commit import GroupCommit

                        self._claimer = claimer = autocommit_engine(
                            engine, self.settings.database.pool_size)
                        self._claims = GroupCommit(
                            lambda r: ledger.claim_fast(claimer, r),
                            lambda rows: ledger.claim_fast_many(claimer, rows),
                            alone_after=refused)
            if self._claims.submit(row):
                return "claimed"
        with self.session() as s:
            return ledger.claim(s, row, lease_s=lease_s, claim_ttl_s=self.heartbeat().claim_ttl_s,
                                sent_at=None if sent_at is None else
                                datetime.fromtimestamp(sent_at, timezone.utc))

    def provider(self, name: str) -> Provider:
        """The adapter for ``name``, built on first use (thread-safe)."""
        prov = self.providers.get(name)
        if prov is None:
            with _LOCK:
                prov = self.providers.get(name) or build_provider(name, self.settings)
                self.providers[name] = prov
        return prov

    def provider_for(self, spec: ModelSpec) -> Provider:
        """The adapter ``spec`` is sent through: its deployment's own client, or its provider's
        (a model that declares no deployments)."""
        dep = spec.deployment
        if dep is None:
            return self.provider(spec.provider)
        key = f"deployment:{dep.name}"
        prov = self.providers.get(key)
        if prov is None:
            from workers.providers.deployed import build_deployment_provider

            with _LOCK:
                prov = self.providers.get(key) or build_deployment_provider(dep, self.settings)
                self.providers[key] = prov
        return prov

    def health(self) -> Any:
        """This process's view of deployment health, shared through the state Redis."""
        if self.deployment_health is None:
            with _LOCK:
                if self.deployment_health is None:
                    from workers.deployment_health import DeploymentHealth

                    self.deployment_health = DeploymentHealth(
                        self.tokens, prefix=self.settings.broker.key_prefix,
                        cooldown_s=self.settings.providers.deployment_cooldown_s)
        return self.deployment_health

    def close(self) -> None:
        """Close provider clients and the ledger engine."""
        for prov in self.providers.values():
            prov.close()
        self.providers.clear()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._claimer is not None:
            self._claimer.dispose()
        if self._attempter is not None:
            self._attempter.dispose()


def build_runtime(settings: Settings, **levers: Any) -> WorkerRuntime:
    """A runtime for ``settings``; ``levers`` override the configured admission and cache."""
    from queues.wiring import ledger_sessions, worker_levers

    sessions = ledger_sessions(settings)
    p = settings.providers
    levers = {**worker_levers(settings, sessions), **levers}
    return WorkerRuntime(
        settings=settings, catalogue=load_catalogue(settings.prices_path),
        sessions=sessions,
        retry=RetryPolicy(max_attempts=p.max_attempts, backoff_base_s=p.backoff_base_s,
                          backoff_max_s=p.backoff_max_s),
        **levers)


def build_provider(name: str, settings: Settings) -> Provider:
    """Construct the adapter called ``name`` from the provider settings."""
    p = settings.providers
    if name == "openai":
        from workers.providers.openai_chat import OpenAIChatProvider

        return OpenAIChatProvider(
            api_key=provider_key(p.openai_api_key, p.openai_base_url, "OPENAI"),
            base_url=p.openai_base_url, timeout=p.timeout_s)
    if name == "anthropic":
        from workers.providers.anthropic_messages import AnthropicMessagesProvider

        return AnthropicMessagesProvider(
            api_key=provider_key(p.anthropic_api_key, p.anthropic_base_url, "ANTHROPIC"),
            base_url=p.anthropic_base_url, timeout=p.timeout_s)
    if name == "google":
        from workers.providers.gemini import GeminiProvider

        key = (None if p.google_vertex and p.google_project and p.google_api_key is None
               else provider_key(p.google_api_key, p.google_base_url, "GEMINI"))
        return GeminiProvider(api_key=key, base_url=p.google_base_url, timeout=p.timeout_s,
                              vertex=p.google_vertex, project=p.google_project,
                              location=p.google_location)
    if name == "vllm":
        from workers.gpu.runtime import gpu_provider

        return gpu_provider(settings)
    raise ConfigError(f"no adapter for provider {name!r}; the price file names openai, "
                      "anthropic, google or vllm")


def provider_key(secret: Any, base_url: str | None, env: str) -> str:
    """The API key to use: the configured secret, or the stand-in placeholder next to a base URL."""
    if secret is not None:
        return str(secret.get_secret_value())
    if base_url:
        return STANDIN_KEY
    # Settings name Gemini's group "google"; its SDK reads GEMINI_API_KEY.
    group = "GOOGLE" if env == "GEMINI" else env
    raise ConfigError(f"no {env}_API_KEY is set; set it (or SLUICE_PROVIDERS__{group}_API_KEY), "
                      f"or point SLUICE_PROVIDERS__{group}_BASE_URL at the local stand-in")


def get_runtime(app: Any) -> WorkerRuntime:
    """The runtime of the worker running ``app``, built from ``app.sluice_settings`` once."""
    rt = getattr(app, "_sluice_runtime", None)
    if rt is None:
        with _LOCK:
            rt = getattr(app, "_sluice_runtime", None)
            if rt is None:
                settings = getattr(app, "sluice_settings", None)
                if settings is None:
                    raise ConfigError("this Celery app was not built by queues.app.create_app; "
                                      "start workers with `celery -A queues.celery_app worker`")
                factory = getattr(app, "sluice_runtime_factory", None)
                rt = factory(settings) if factory else build_runtime(settings)
                app._sluice_runtime = rt
    return rt
