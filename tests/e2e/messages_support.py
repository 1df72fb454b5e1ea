"""Helpers of the Messages door's e2e modules: unique user turns, tool definitions."""

from __future__ import annotations

import uuid
from typing import Any

#: A Claude model the session worker serves through the stand-in's Anthropic API.
CLAUDE = "claude-haiku-4-5"


def said(text: str) -> str:
    """``text`` made unique, so no other test's answer is cached for it."""
    return f"{text} ({uuid.uuid4().hex[:8]})"


def tools(n: int) -> list[dict[str, Any]]:
    """``n`` tool definitions in Anthropic's shape."""
    return [{"name": f"tool_{i}", "description": f"Looks up fact number {i} of a product.",
             "input_schema": {"type": "object", "properties": {"sku": {"type": "string"}},
                              "required": ["sku"]}} for i in range(n)]
