"""Everything one stand-in app remembers: prompt caches, fault scripts, counters."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from typing import Any

from models.domain.catalogue import ModelSpec
from workers.providers.standin.caching import CacheUsage, TTLStore
from workers.providers.standin.config import StandInConfig
from workers.providers.standin.faults import FaultScripts

#: Which catalogue providers each wire format serves (vLLM and any OpenAI-compatible server
#: speak the OpenAI format; Bedrock and Vertex serve Claude, Azure serves GPT).
_SERVES = {"openai": ("openai", "vllm", "openai_compatible"), "anthropic": ("anthropic",),
           "gemini": ("google",), "bedrock": ("anthropic",), "vertex": ("anthropic",),
           "azure": ("openai",)}


class StandInState:
    """Per-app state; only touched from the server's event loop, so it needs no locks."""

    def __init__(self, config: StandInConfig) -> None:
        self.config = config
        self.anthropic_cache = TTLStore(config.clock, config.max_cache_entries)
        self.openai_cache = TTLStore(config.clock, config.max_cache_entries)
        self.gemini_cache = TTLStore(config.clock, config.max_cache_entries)
        from workers.providers.standin.gemini_caches import GeminiCaches

        self.gemini_caches = GeminiCaches(config.clock)
        self.faults = FaultScripts()
        #: The last model-call bodies, as received (image bytes replaced by their hash), so
        #: tests can assert what a provider was sent.
        self.received: deque[dict[str, Any]] = deque(maxlen=2000)
        #: Set by the runner when stopping, so delayed answers end at once.
        self.closing = False
        self._models: dict[str, ModelSpec] = {}
        for spec in config.catalogue.models.values():
            # Adapters may send the provider's own (dated) name rather than the catalogue key.
            self._models[spec.api_name or spec.name] = spec
            self._models[spec.name] = spec
            for variant in spec.deployments:  # a Bedrock model id, an Azure deployment name
                self._models.setdefault(variant.api_name, spec)
        for alias, name in config.catalogue.aliases.items():  # every platform's model ids
            self._models.setdefault(alias, config.catalogue.models[name])
        self.reset_stats()

    def model(self, name: Any, family: str) -> ModelSpec | None:
        """The catalogue model ``name`` if ``family``'s API serves it, else None."""
        spec = self._models.get(name) if isinstance(name, str) else None
        if spec is None or spec.provider not in _SERVES[family]:
            return None
        return spec

    def models(self, family: str) -> list[ModelSpec]:
        """Every catalogue model ``family``'s API serves."""
        return [m for m in self.config.catalogue.models.values() if m.provider in _SERVES[family]]

    def reset_stats(self) -> None:
        """Zero every counter."""
        self.by_path: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        #: ``anthropic-beta`` header values received (a gateway forwards its client's).
        self.by_beta: Counter[str] = Counter()
        self.faults_injected = 0

    def reset(self) -> None:
        """Forget counters, cached prefixes and queued faults."""
        self.reset_stats()
        self.received.clear()
        self.anthropic_cache.clear()
        self.openai_cache.clear()
        self.gemini_cache.clear()
        self.gemini_caches.clear()
        self.faults.clear()

    def record_request(self, path: str) -> None:
        """Count a request as it arrives."""
        self.by_path[path] += 1

    def record_beta(self, value: str) -> None:
        """Count an ``anthropic-beta`` header as received."""
        self.by_beta[value] += 1

    def record_body(self, family: str, body: dict[str, Any]) -> None:
        """Keep a model-call body (its images as hashes) for ``GET /_standin/received``."""
        self.received.append({"family": family, "body": _scrubbed(body)})

    def find_received(self, contains: str | None = None) -> list[dict[str, Any]]:
        """Kept bodies whose JSON contains ``contains`` (all when None), oldest first."""
        if contains is None:
            return list(self.received)
        return [r for r in self.received
                if contains in json.dumps(r["body"], ensure_ascii=False)]

    def record_model(self, model: str) -> None:
        """Count a request once its model is known to be served."""
        self.by_model[model] += 1

    def record_status(self, status: int) -> None:
        """Count how a model call ended."""
        self.by_status[str(status)] += 1

    def record_usage(self, prompt_tokens: int, output_tokens: int, cache: CacheUsage) -> None:
        """Add one answered call's tokens to the totals."""
        self.tokens["prompt"] += prompt_tokens
        self.tokens["output"] += output_tokens
        self.tokens["cache_read"] += cache.read
        self.tokens["cache_write_5m"] += cache.write_5m
        self.tokens["cache_write_1h"] += cache.write_1h

    def stats(self) -> dict[str, Any]:
        """A JSON-safe snapshot of the counters."""
        return {
            "requests": sum(self.by_path.values()),
            "by_path": dict(self.by_path),
            "by_model": dict(self.by_model),
            "by_status": dict(self.by_status),
            "tokens": {k: self.tokens[k] for k in ("prompt", "output", "cache_read",
                                                   "cache_write_5m", "cache_write_1h")},
            "anthropic_beta": dict(self.by_beta),
            "faults_injected": self.faults_injected,
            "faults_pending": self.faults.pending(),
            "cache_entries": {"anthropic": len(self.anthropic_cache),
                              "openai": len(self.openai_cache),
                              "gemini": len(self.gemini_cache)},
            "gemini_caches": {"created": self.gemini_caches.created,
                              "deleted": self.gemini_caches.deleted,
                              "live": sum(1 for n in self.gemini_caches.entries
                                          if self.gemini_caches.live(
                                              n, self.gemini_caches.entries[n].key)),
                              "created_tokens": self.tokens["gemini_cache_created"],
                              "storage_token_seconds":
                                  self.gemini_caches.storage_token_seconds()},
        }


def _scrubbed(value: Any) -> Any:
    """``value`` with base64 image data (and data URLs) replaced by their SHA-256."""
    if isinstance(value, dict):
        out = {k: _scrubbed(v) for k, v in value.items()}
        gemini_inline = "mimeType" in value or "mime_type" in value
        if (value.get("type") == "base64" or gemini_inline) and isinstance(value.get("data"),
                                                                           str):
            out["data"] = "sha256:" + hashlib.sha256(value["data"].encode()).hexdigest()
        if isinstance(value.get("url"), str) and value["url"].startswith("data:"):
            head, _, data = value["url"].partition(",")
            out["url"] = f"{head},sha256:" + hashlib.sha256(data.encode()).hexdigest()
        return out
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value
