"""One chat turn: text, images, tool calls and results, reasoning and thinking, checked."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.domain.content import ContentPart, ImagePart, TextPart
from models.domain.thinking import ThinkingBlock
from models.domain.tools import ToolCall, openai_tool_calls

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class Message(BaseModel):
    """One chat turn of the dynamic part (or a few-shot example).

    A tool loop adds two kinds: an assistant turn that called tools (``tool_calls``, its text
    may be empty) and a ``tool`` turn carrying one call's result (``tool_call_id``). A user
    turn with images keeps its text and images in order in ``parts``; ``content`` is then its
    text parts joined by newlines (what routing, normalizing and text counting read). A turn
    of text only has no parts, so it serializes and hashes as it always did.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "assistant", "tool"]
    #: Declared before ``content`` so that a turn of images alone passes its check.
    parts: tuple[ContentPart, ...] = ()
    content: str = Field(default="", max_length=2_000_000)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)
    #: Reasoning items the model produced before this assistant turn, passed back opaque
    #: (OpenAI's Responses API reads them; other providers never see them).
    reasoning: tuple[dict[str, Any], ...] = Field(default=(), max_length=64)
    #: An assistant turn's thinking as the model returned it (Anthropic's signed blocks), sent
    #: back unchanged: a thinking tool loop on Claude needs the last turn's.
    thinking: tuple[ThinkingBlock, ...] = ()

    @field_validator("content")
    @classmethod
    def _user_says_something(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if info.data.get("role") == "user" and not value and not info.data.get("parts"):
            raise ValueError("a user message needs content")
        return value

    @model_validator(mode="before")
    @classmethod
    def _text_of_parts(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not raw.get("parts"):
            return raw
        parts = list(raw["parts"])
        texts = [p.text if isinstance(p, TextPart) else p.get("text", "")
                 for p in parts if (p.type if isinstance(p, BaseModel)
                                    else (p or {}).get("type")) == "text"]
        out = dict(raw)
        out.setdefault("content", "\n".join(str(t) for t in texts))
        if len(texts) == len(parts):  # text only: a plain turn, as before
            out.pop("parts")
        return out

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The turn's images, in order."""
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @model_validator(mode="after")
    def _shape_fits_role(self) -> Message:
        if self.role == "tool":
            if self.tool_call_id is None:
                raise ValueError("a tool message needs the tool_call_id of the call it answers")
        elif self.tool_call_id is not None:
            raise ValueError("only a tool message has a tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if self.role == "assistant" and not (self.content or self.tool_calls):
            raise ValueError("an assistant message needs content or tool_calls")
        if self.parts and self.role != "user":
            raise ValueError("only a user message has image parts")
        if self.reasoning and self.role != "assistant":
            raise ValueError("only an assistant message carries reasoning items")
        if self.thinking and self.role != "assistant":
            raise ValueError("only an assistant message has thinking blocks")
        if self.parts and self.content != "\n".join(p.text for p in self.parts
                                                     if isinstance(p, TextPart)):
            raise ValueError("content must be the text parts joined by newlines (or left out)")
        if len({c.id for c in self.tool_calls}) < len(self.tool_calls):
            raise ValueError("tool call ids must be unique within a turn")
        for call in self.tool_calls:
            if not _TOOL_NAME.match(call.name) or not 0 < len(call.id) <= 256:
                raise ValueError(f"tool call {call.id[:40]!r}: needs an id (1-256 characters) "
                                 "and the name of a tool (letters, digits, _ and -, 1-64)")
            # Anthropic takes a call's input as an object: arguments must be a JSON object.
            try:
                parsed = json.loads(call.arguments)
            except (ValueError, RecursionError):  # nesting past the parser's depth, too
                parsed = None
            if not isinstance(parsed, dict):
                raise ValueError(f"tool call {call.id}: arguments must be a JSON object")
        return self

    def to_openai(self) -> dict[str, Any]:
        """This turn as a chat-completions message."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.parts:
            out["content"] = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else
                              {"type": "image_url", "image_url": {"url": p.data_url(),
                                                                  "detail": p.detail}}
                              for p in self.parts]
        if self.tool_calls:
            out["content"] = self.content or None
            out["tool_calls"] = openai_tool_calls(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out
