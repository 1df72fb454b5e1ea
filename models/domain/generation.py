"""Provider-neutral generation options: tool choice, a response schema, reasoning effort."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Reasoning efforts a request may ask for (OpenAI's names); each model lists those it takes.
EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh")
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
#: Anthropic's extended thinking: the budget must be at least this and below max_tokens.
MIN_THINKING_BUDGET = 1024


class ToolChoice(BaseModel):
    """Whether the model may, must or must not call a tool, or which one it must call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["auto", "none", "required", "function"] = "auto"
    #: The tool to call, for ``mode="function"``.
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")

    @model_validator(mode="after")
    def _named_when_forced(self) -> ToolChoice:
        if (self.mode == "function") != (self.name is not None):
            raise ValueError("tool_choice names a tool exactly when its mode is 'function'")
        return self

    @property
    def forces(self) -> bool:
        """True when the model must call a tool (any, or a named one)."""
        return self.mode in ("required", "function")


class ResponseSchema(BaseModel):
    """A JSON schema the answer must follow (OpenAI's ``json_schema`` response format)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = Field(default="", max_length=4096)
    schema_: dict[str, Any] = Field(alias="schema", default_factory=lambda: {"type": "object"})
    strict: bool | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              serialize_by_alias=True)


class Prediction(BaseModel):
    """Predicted output (OpenAI's ``prediction``): most of the answer is known in advance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str = Field(max_length=2_000_000)


class ResponsesOptions(BaseModel):
    """What a request from the Responses door asks beside ChatRequest's own fields: an OpenAI
    model then gets OpenAI's Responses API (so reasoning items round-trip), others ignore it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Extra output the caller asked for (``reasoning.encrypted_content``, ...).
    include: tuple[str, ...] = Field(default=(), max_length=16)
    #: A summary of the model's reasoning (``reasoning.summary``).
    reasoning_summary: Literal["auto", "concise", "detailed"] | None = None
    #: What to do with an input past the context window (``truncation``).
    truncation: Literal["auto", "disabled"] | None = None
