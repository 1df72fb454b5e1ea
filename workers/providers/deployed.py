"""The adapter for one declared deployment: its transport's SDK client, its URL and key."""

from __future__ import annotations

import os

from models.domain.deployments import Deployment
from models.domain.errors import ConfigError
from models.domain.settings import Settings
from workers.providers.base import Provider

#: What an OpenAI-compatible server without auth is sent (the SDK wants some key).
NO_KEY = "EMPTY"


def _key(dep: Deployment, *, required: bool) -> str | None:
    if not dep.key_env:
        if required:
            raise ConfigError(f"deployment {dep.name} ({dep.transport}) needs key_env: the "
                              "environment variable holding its key")
        return None
    value = os.environ.get(dep.key_env)
    if not value and required:
        raise ConfigError(f"deployment {dep.name}: {dep.key_env} is not set; export the key "
                          "in it, or change key_env in the price file")
    return value or None


def build_deployment_provider(dep: Deployment, settings: Settings) -> Provider:
    """A fresh adapter for ``dep``, its SDK's retries off as for every adapter."""
    p = settings.providers
    timeout = p.timeout_s
    if dep.transport in ("anthropic", "bedrock", "vertex"):
        from workers.providers.anthropic_messages import AnthropicMessagesProvider
        from workers.runtime import provider_key

        if dep.transport == "anthropic":
            base = dep.base_url or p.anthropic_base_url
            key = _key(dep, required=False) or provider_key(p.anthropic_api_key, base,
                                                            "ANTHROPIC")
            return AnthropicMessagesProvider(api_key=key, base_url=base, timeout=timeout)
        # Bedrock signs with the AWS credential chain; Vertex takes an access token from
        # key_env when set, else Google's default credentials.
        return AnthropicMessagesProvider(
            transport=dep.transport, base_url=dep.base_url, timeout=timeout, region=dep.region,
            project=dep.project,
            access_token=_key(dep, required=False) if dep.transport == "vertex" else None)
    if dep.transport in ("openai", "azure", "openai_compatible"):
        from workers.providers.openai_chat import OpenAIChatProvider
        from workers.runtime import provider_key

        if dep.transport == "openai":
            base = dep.base_url or p.openai_base_url
            key = _key(dep, required=False) or provider_key(p.openai_api_key, base, "OPENAI")
            return OpenAIChatProvider(api_key=key, base_url=base, timeout=timeout)
        if dep.transport == "azure":
            return OpenAIChatProvider(api_key=str(_key(dep, required=True)),
                                      base_url=dep.base_url, api_version=dep.api_version,
                                      timeout=timeout)
        return OpenAIChatProvider(api_key=_key(dep, required=False) or NO_KEY,
                                  base_url=dep.base_url, timeout=timeout)
    from workers.runtime import build_provider

    # Gemini and the in-process engine have one client each: their settings decide.
    return build_provider(dep.transport, settings)
