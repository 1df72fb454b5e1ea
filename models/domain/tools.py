"""Tool calls and tool definitions: the function-calling vocabulary of a chat request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolCall(BaseModel):
    """A function call the model asked for, in OpenAI's terms (arguments as a JSON string)."""

    # No limits here: a provider's answer must never fail validation after it was paid for.
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    arguments: str = "{}"


def openai_tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Calls as chat-completions ``tool_calls`` entries (in requests and in answers alike)."""
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls]


class ToolDef(BaseModel):
    """A function the model may call; part of the static, cacheable prefix."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
