"""A model's extended thinking as Anthropic returns it: signed text, or redacted (encrypted)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


class ThinkingBlock(BaseModel):
    """One ``thinking`` block (its text and the provider's ``signature``) or one
    ``redacted_thinking`` block (opaque ``data``).

    Answers carry them so a client can send them back unchanged: Anthropic requires the last
    assistant turn's thinking in a thinking tool loop, and checks the signature.
    """

    # No limits here: a provider's answer must never fail validation after it was paid for.
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["thinking", "redacted_thinking"] = "thinking"
    thinking: str = ""
    signature: str = ""
    data: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> ThinkingBlock:
        if self.type == "redacted_thinking" and (self.thinking or self.signature):
            raise ValueError("a redacted_thinking block carries data only")
        if self.type == "thinking" and self.data:
            raise ValueError("a thinking block carries thinking and a signature, not data")
        return self

    def to_anthropic(self) -> dict[str, Any]:
        """The block as Anthropic's content block (the same shape in answers and requests)."""
        if self.type == "redacted_thinking":
            return {"type": "redacted_thinking", "data": self.data}
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


def thinking_of(blocks: Any) -> tuple[ThinkingBlock, ...]:
    """The thinking blocks among SDK content blocks (objects or dicts), in order."""
    out = []
    for b in blocks or ():
        get = b.get if isinstance(b, dict) else (lambda k, d=None, _b=b: getattr(_b, k, d))
        kind = get("type")
        if kind == "thinking":
            out.append(ThinkingBlock(thinking=get("thinking") or "",
                                     signature=get("signature") or ""))
        elif kind == "redacted_thinking":
            out.append(ThinkingBlock(type="redacted_thinking", data=get("data") or ""))
    return tuple(out)
