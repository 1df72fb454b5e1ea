"""A local HTTP stand-in for the OpenAI, Anthropic and Gemini APIs, prompt caches included."""

from __future__ import annotations

from workers.providers.standin.app import create_app
from workers.providers.standin.config import ManualClock, StandInConfig
from workers.providers.standin.runner import StandIn

__all__ = ["ManualClock", "StandIn", "StandInConfig", "create_app"]
