"""Extended thinking as Anthropic signs it: blocks with signatures, and the tool-loop check.

Signatures are an HMAC of the thinking text under the stand-in's own secret, so a block that
comes back changed (or made up) fails as it does on the real API; redacted thinking is opaque
signed data. A thinking tool loop whose last assistant turn does not start with its thinking
is refused with Anthropic's message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from workers.providers.standin.errors import RequestInvalid

#: Anthropic's documented test string: a prompt holding it gets redacted thinking back.
REDACTED_TRIGGER = ("ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_"
                    "46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB")
_SECRET = b"sluicegate-standin-thinking"


def _mac(kind: str, payload: str) -> str:
    digest = hmac.new(_SECRET, f"{kind}\x00{payload}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def thinking_block(words: str) -> dict[str, Any]:
    """A ``thinking`` block signed over its text."""
    return {"type": "thinking", "thinking": words, "signature": _mac("thinking", words)}


def redacted_block(seed: str) -> dict[str, Any]:
    """A ``redacted_thinking`` block: opaque data that carries its own signature."""
    body = hashlib.sha256(seed.encode()).hexdigest()
    return {"type": "redacted_thinking",
            "data": base64.b64encode(f"{body}.{_mac('redacted', body)}".encode()).decode()}


def _valid(block: dict[str, Any]) -> bool:
    if block.get("type") == "thinking":
        sig = block.get("signature")
        return isinstance(sig, str) and isinstance(block.get("thinking"), str) and \
            hmac.compare_digest(sig, _mac("thinking", block["thinking"]))
    try:
        body, _, mac = base64.b64decode(str(block.get("data", "")), validate=True) \
            .decode().partition(".")
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(mac, _mac("redacted", body))


def check_thinking(messages: Any, thinking: bool) -> None:
    """Every thinking block sent back must be the model's own, unchanged; with thinking on,
    a tool loop's last assistant turn must start with its thinking (Anthropic's rules)."""
    if not isinstance(messages, list):
        return
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and block.get("type") in ("thinking",
                                                                 "redacted_thinking"):
                if msg.get("role") != "assistant":
                    raise RequestInvalid(f"messages.{i}.content.{j}: thinking blocks belong "
                                         "to assistant turns")
                if not _valid(block):
                    raise RequestInvalid(f"messages.{i}.content.{j}: Invalid `signature` in "
                                         f"`{block['type']}` block")
    if thinking:
        _loop_starts_with_thinking(messages)


def _loop_starts_with_thinking(messages: list[Any]) -> None:
    last = messages[-1] if messages else None
    if not (isinstance(last, dict) and last.get("role") == "user"
            and isinstance(last.get("content"), list)
            and any(isinstance(b, dict) and b.get("type") == "tool_result"
                    for b in last["content"])):
        return
    at = len(messages) - 2
    prev = messages[at] if at >= 0 else None
    content = prev.get("content") if isinstance(prev, dict) else None
    if not (isinstance(content, list) and any(isinstance(b, dict) and b.get("type") ==
                                              "tool_use" for b in content)):
        return
    first = content[0].get("type") if isinstance(content[0], dict) else None
    if first not in ("thinking", "redacted_thinking"):
        raise RequestInvalid(
            f"messages.{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{first}`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block (preceeding the lastmost set of `tool_use` and "
            "`tool_result` blocks). We recommend you include thinking blocks from previous "
            "turns. To avoid this requirement, disable `thinking`.")
