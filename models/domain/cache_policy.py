"""Per-feature response-cache policy: what is cacheable, for how long, normalized and shared how."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.domain.errors import ConfigError
from models.domain.normalize import (BUILTIN_PATTERNS, NormalizationSpec, Normalizer,
                                     Whitespace, compile_normalizer)
from models.domain.request import ChatRequest

#: Who may read an entry: everyone in the org, the team, the feature, or only the same user.
Scope = Literal["org", "team", "feature", "user"]
#: Feature name whose policy applies to features with none of their own.
DEFAULT_FEATURE = "*"
_MAX_COMPILED = 4096


class FeatureCachePolicy(BaseModel):
    """How the response cache treats one feature (``SLUICE_CACHE__FEATURES='{"faq": {...}}'``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    #: Seconds an entry lives; None takes ``CacheSettings.default_ttl_s``.
    ttl_s: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    #: Off by default: case carries meaning in code, identifiers, some languages.
    lowercase: bool = False
    whitespace: Whitespace = "standard"
    #: Built-in volatile-field patterns to strip (iso_timestamp, date, time, uuid, ...).
    patterns: tuple[str, ...] = ()
    #: The feature's own volatile fields: name -> regex.
    custom_patterns: dict[str, str] = Field(default_factory=dict)
    scope: Scope = "feature"
    #: Cache sampled (temperature > 0) answers too: one sample then serves every repeat.
    allow_nondeterministic: bool = False
    semantic: bool = False
    #: Cosine similarity at or above which a semantic neighbour may answer.
    semantic_threshold: float = Field(default=0.9, gt=0.0, le=1.0)

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in value if n not in BUILTIN_PATTERNS]
        if unknown:
            raise ValueError(f"unknown pattern(s) {unknown}; built-ins are "
                             f"{', '.join(BUILTIN_PATTERNS)} (or use custom_patterns)")
        return value

    @model_validator(mode="after")
    def _compiles(self) -> FeatureCachePolicy:
        try:
            compile_normalizer(self.spec())
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return self

    def spec(self) -> NormalizationSpec:
        """The normalization this policy declares."""
        return NormalizationSpec(whitespace=self.whitespace, lowercase=self.lowercase,
                                 patterns=tuple(self.patterns),
                                 custom=tuple(sorted(self.custom_patterns.items())))


@dataclass(frozen=True)
class CompiledPolicy:
    """A feature's policy with its normalizer compiled and its TTL resolved, ready per request."""

    feature: str
    policy: FeatureCachePolicy
    normalizer: Normalizer
    ttl_s: int
    #: Normalization and scope: entries made under another declaration are never read.
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        # Computed once: the key of every request of the feature includes it.
        object.__setattr__(self, "fingerprint",
                           f"{self.normalizer.spec.fingerprint()}|scope={self.policy.scope}")

    def cacheable(self, request: ChatRequest) -> tuple[bool, str]:
        """Whether ``request`` may be answered from or written to the cache, and why."""
        if not self.policy.enabled:
            return False, f"caching is disabled for feature {self.feature!r}"
        if request.temperature > 0 and not (self.policy.allow_nondeterministic
                                            or request.cache.allow_nondeterministic):
            return False, (f"temperature {request.temperature} samples; set "
                           "cache.allow_nondeterministic (request or feature) to cache it")
        return True, "deterministic" if request.temperature == 0 else "opted in"

    def readable(self, request: ChatRequest) -> bool:
        """Look the request up: mode ``use`` and cacheable."""
        return request.cache.mode == "use" and self.cacheable(request)[0]

    def writable(self, request: ChatRequest) -> bool:
        """Store the answer: mode ``use`` or ``refresh`` and cacheable (``bypass`` never stores)."""
        return request.cache.mode != "bypass" and self.cacheable(request)[0]


class PolicyBook:
    """Compiled policies by feature, built on first use (patterns compile once per process)."""

    def __init__(self, features: Mapping[str, FeatureCachePolicy], default_ttl_s: int) -> None:
        self._features = dict(features)
        self._default = self._features.get(DEFAULT_FEATURE, FeatureCachePolicy())
        self._default_ttl_s = default_ttl_s
        self._compiled: dict[str, CompiledPolicy] = {}
        self._default_normalizer: Normalizer | None = None
        self._lock = threading.Lock()

    def get(self, feature: str) -> CompiledPolicy:
        """The compiled policy of ``feature`` (the ``*`` entry or the defaults when undeclared)."""
        found = self._compiled.get(feature)
        if found is None:
            with self._lock:
                if len(self._compiled) >= _MAX_COMPILED:  # feature names come from requests
                    self._compiled.clear()
                policy = self._features.get(feature)
                if policy is None:
                    policy, normalizer = self._default, self._shared_default()
                else:
                    normalizer = compile_normalizer(policy.spec())
                found = CompiledPolicy(feature=feature, policy=policy, normalizer=normalizer,
                                       ttl_s=policy.ttl_s or self._default_ttl_s)
                self._compiled[feature] = found
        return found

    def _shared_default(self) -> Normalizer:
        if self._default_normalizer is None:
            self._default_normalizer = compile_normalizer(self._default.spec())
        return self._default_normalizer
