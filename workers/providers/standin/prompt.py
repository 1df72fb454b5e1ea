"""Both wire formats read into one prompt shape: token counts, cache breakpoints, prefix hashes.

OpenAI counting follows :func:`models.domain.tokens.count_request` (o200k, 4 framing tokens per
message, the system prompt counted as one, 3 for the reply primer, tools as name + description
+ ``str(parameters)``), so the gateway's estimate of an OpenAI prompt is its bill. Anthropic
counting is Claude-shaped, so the gateway's upper bound is tested for real: another tokenizer
(cl100k, which like Claude's spends more tokens than o200k on the same text), tool schemas as
JSON, and the tool-use system prompt Claude 4.x models add whenever tools are declared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from models.domain.image_tokens import ImageRule
from models.domain.tokens import PER_MESSAGE, PER_REPLY, count_text, encoding_named
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.images import anthropic_image_tokens, openai_image_tokens

TTLS: tuple[str, ...] = ("5m", "1h")
MAX_BREAKPOINTS = 4
OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant"})
#: Claude 4.x's tool-use system prompt: 346 tokens for tool_choice auto or none, 313 for any
#: or a named tool (Anthropic's tool-use pricing page).
TOOL_PROMPT = {"auto": 346, "none": 346, "any": 313, "tool": 313}


def claude_text(text: str) -> int:
    """Tokens of ``text`` as the stand-in's Claude counts them (cl100k: more than o200k)."""
    if not text:
        return 0
    enc = encoding_named("cl100k_base")
    if enc is None:  # pragma: no cover - bpe-openai ships it
        return len(text.encode("utf-8")) // 2 + 1
    return len(enc.encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Breakpoint:
    """An Anthropic ``cache_control`` mark: the prompt up to and including its block."""

    tokens: int
    ttl: str
    digest: str


@dataclass
class Prompt:
    """A request's prompt as the stand-in accounts for it."""

    total: int = 0
    #: Text of the last user turn; decides how long the natural reply is.
    last_user: str = ""
    #: Hash of the whole canonical prompt (seeds the reply).
    digest: str = ""
    #: ``(tokens, digest)`` after each tool and message: OpenAI's prefix-cache candidates.
    prefixes: list[tuple[int, str]] = field(default_factory=list)
    #: Anthropic ``cache_control`` marks in layout order (tools, system, messages).
    breakpoints: list[Breakpoint] = field(default_factory=list)
    #: ``(tokens, digest)`` after every block: where Anthropic looks back for a cache hit.
    boundaries: list[tuple[int, str]] = field(default_factory=list)
    #: Images seen, and the tokens they were counted at.
    images: int = 0
    image_tokens: int = 0


class _Builder:
    """Walks a prompt in order, keeping a running token count and a running content hash."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.tokens = 0
        self.prompt = Prompt()

    def add(self, tag: str, content: Any, tokens: int) -> None:
        # The tag carries roles and turn boundaries: moving text between turns changes the hash.
        self._hash.update(tag.encode() + b"\x1f" + _canon(content) + b"\x1e")
        self.tokens += tokens
        self.prompt.boundaries.append((self.tokens, self._hash.copy().hexdigest()))

    def mark_prefix(self) -> None:
        self.prompt.prefixes.append((self.tokens, self._hash.copy().hexdigest()))

    def mark_breakpoint(self, cache_control: Any, where: str) -> None:
        if cache_control is None:
            return
        if not isinstance(cache_control, dict) or cache_control.get("type") != "ephemeral":
            raise RequestInvalid(f"{where}.cache_control: type must be 'ephemeral'")
        ttl = cache_control.get("ttl", "5m")
        if ttl not in TTLS:
            raise RequestInvalid(f"{where}.cache_control.ttl: must be one of '5m', '1h'")
        self.prompt.breakpoints.append(Breakpoint(self.tokens, ttl, self._hash.copy().hexdigest()))

    def finish(self, last_user: str) -> Prompt:
        self.prompt.total = self.tokens + PER_REPLY
        self.prompt.last_user = last_user
        self.prompt.digest = self._hash.hexdigest()
        return self.prompt


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _strip(block: Any) -> Any:
    # cache_control is a billing hint, not content: it must not change the prefix hash.
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def tool_tokens(name: Any, description: Any, parameters: Any) -> int:
    """Tokens of one tool definition, framing included (the gateway's rule)."""
    params = count_text(str(parameters)) if parameters is not None else 0
    return PER_MESSAGE + count_text(str(name or "")) + count_text(str(description or "")) + params


_DEFAULT_RULE = ImageRule()


def openai_prompt(body: dict[str, Any], rule: ImageRule = _DEFAULT_RULE) -> Prompt:
    """Read an OpenAI chat-completions body: tools first, then the messages in order; images
    counted by ``rule`` (the model's)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestInvalid("'messages' must be a non-empty array", param="messages")
    b = _Builder()
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise RequestInvalid(f"tools[{i}].function.name is required", param=f"tools[{i}]")
        b.add("tool", fn, tool_tokens(fn.get("name"), fn.get("description"), fn.get("parameters")))
        b.mark_prefix()
    last_user = ""
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in OPENAI_ROLES:
            raise RequestInvalid(f"{where}.role must be one of {sorted(OPENAI_ROLES)}", param=where)
        text, tokens = _openai_content(msg.get("content"), f"{where}.content", rule, b.prompt)
        for call in msg.get("tool_calls") or []:
            fn = (call.get("function") or {}) if isinstance(call, dict) else {}
            tokens += count_text(str(fn.get("name", ""))) + count_text(str(fn.get("arguments", "")))
        b.add(msg["role"], {k: msg.get(k) for k in ("content", "tool_calls", "tool_call_id")},
              PER_MESSAGE + tokens)
        b.mark_prefix()
        if msg["role"] == "user":
            last_user = text
    return b.finish(last_user)


def _openai_content(content: Any, where: str, rule: ImageRule, prompt: Prompt
                    ) -> tuple[str, int]:
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, count_text(content)
    if not isinstance(content, list):
        raise RequestInvalid(f"{where} must be a string or an array of content parts", param=where)
    texts: list[str] = []
    tokens = 0
    for j, part in enumerate(content):
        if not isinstance(part, dict) or "type" not in part:
            raise RequestInvalid(f"{where}[{j}] must be an object with a 'type'", param=where)
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise RequestInvalid(f"{where}[{j}].text must be a string", param=where)
            texts.append(part["text"])
            tokens += count_text(part["text"])
        elif part["type"] == "image_url":
            if rule.kind == "none":
                raise RequestInvalid("Invalid content type. image_url is only supported by "
                                     "certain models.", param=f"{where}[{j}]")
            counted = openai_image_tokens(part.get("image_url"), rule, f"{where}[{j}]")
            prompt.images += 1
            prompt.image_tokens += counted
            tokens += counted
    return "\n".join(texts), tokens


def anthropic_prompt(body: dict[str, Any], vision: bool = True) -> Prompt:
    """Read an Anthropic messages body in cache layout order: tools, system, messages."""
    b = _Builder()
    tools = body.get("tools") or []
    if tools:  # the tool-use system prompt leads the prompt (and its cached prefix)
        choice = body.get("tool_choice") or {}
        b.add("tool-prompt", "", TOOL_PROMPT.get(str(choice.get("type", "auto")), 346))
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not tool.get("name"):
            raise RequestInvalid(f"tools.{i}.name: Field required")
        b.add("tool", _strip(tool),
              PER_MESSAGE + claude_text(str(tool.get("name") or ""))
              + claude_text(str(tool.get("description") or ""))
              + claude_text(_canon(tool.get("input_schema") or {}).decode()))
        b.mark_breakpoint(tool.get("cache_control"), f"tools.{i}")
    system = body.get("system")
    if isinstance(system, str):
        if system:
            b.add("system", system, PER_MESSAGE + claude_text(system))
    elif isinstance(system, list):
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" \
                    or not isinstance(block.get("text"), str):
                raise RequestInvalid(f"system.{j}: system blocks must be text blocks")
            frame = PER_MESSAGE if j == 0 else 0
            b.add("system", _strip(block), frame + claude_text(block["text"]))
            b.mark_breakpoint(block.get("cache_control"), f"system.{j}")
    elif system is not None:
        raise RequestInvalid("system: must be a string or an array of text blocks")
    last_user = _anthropic_messages(b, body.get("messages"), vision)
    found = len(b.prompt.breakpoints)
    if found > MAX_BREAKPOINTS:
        raise RequestInvalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be "
                             f"provided. Found {found}.")
    return b.finish(last_user)


def _anthropic_messages(b: _Builder, messages: Any, vision: bool) -> str:
    if not isinstance(messages, list) or not messages:
        raise RequestInvalid("messages: at least one message is required")
    last_user = ""
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ANTHROPIC_ROLES:
            raise RequestInvalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        role, content = msg["role"], msg.get("content")
        if isinstance(content, str):
            b.add(f"{role}>", content, PER_MESSAGE + claude_text(content))
            text = content
        elif isinstance(content, list) and content:
            texts = []
            for j, block in enumerate(content):
                tokens, block_text = _block(block, f"messages.{i}.content.{j}")
                if block.get("type") == "image":
                    if not vision:
                        raise RequestInvalid(f"messages.{i}.content.{j}: this model does not "
                                             "support image input")
                    tokens = anthropic_image_tokens(block.get("source"),
                                                    f"messages.{i}.content.{j}")
                    b.prompt.images += 1
                    b.prompt.image_tokens += tokens
                # Framing tokens belong to the turn's first block; '>' marks where a turn starts.
                b.add(f"{role}>" if j == 0 else f"{role}+", _strip(block),
                      (PER_MESSAGE if j == 0 else 0) + tokens)
                b.mark_breakpoint(block.get("cache_control"), f"messages.{i}.content.{j}")
                texts.append(block_text)
            text = "\n".join(t for t in texts if t)
        else:
            raise RequestInvalid(f"messages.{i}.content: must be a string or a non-empty array")
        if role == "user":
            last_user = text
    return last_user


def _block(block: Any, where: str) -> tuple[int, str]:
    """Tokens of one content block, and its text when it is a text block."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise RequestInvalid(f"{where}: content blocks must be objects with a 'type'")
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise RequestInvalid(f"{where}.text: Field required")
        return claude_text(block["text"]), block["text"]
    if kind == "tool_use":
        return (claude_text(str(block.get("name", "")))
                + claude_text(_canon(block.get("input")).decode()), "")
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, str):
            return claude_text(inner), ""
        if isinstance(inner, list):
            return sum(claude_text(str(x.get("text", ""))) for x in inner
                       if isinstance(x, dict)), ""
        return 0, ""
    if kind == "thinking":
        return claude_text(str(block.get("thinking", ""))), ""
    return 0, ""  # images are counted by the caller; documents are not modelled
