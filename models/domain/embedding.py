"""Embedding requests and results: inputs as text or token arrays, vectors as float32 base64."""

from __future__ import annotations

import base64
import hashlib
import math
import sys
import uuid
from array import array
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from models.domain.errors import ValidationError
from models.domain.request import MAX_TIMEOUT_S, CachePolicy, Lane
from models.domain.result import Route, Timings

#: One input: a text, or a token array in the model's own tokenizer.
Item = str | tuple[int, ...]
#: OpenAI's limits for one /v1/embeddings request.
MAX_ITEMS = 2048
MAX_DIMENSIONS = 4096
#: Model policy that is not a model name: the feature's configured embedding model.
AUTO = "auto"

_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_NAME_PATTERN = r"^[A-Za-z0-9._:\-/]{1,64}$"


class EmbeddingRequest(BaseModel):
    """Items to embed, with their attribution, lane and options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_ID_PATTERN)
    org: str = Field(default="default", pattern=_NAME_PATTERN)
    team: str = Field(pattern=_NAME_PATTERN)
    feature: str = Field(pattern=_NAME_PATTERN)
    user: str | None = Field(default=None, pattern=_NAME_PATTERN)
    lane: Lane = "interactive"
    model: str = Field(default=AUTO, min_length=1, max_length=128)
    inputs: tuple[Item, ...] = Field(min_length=1, max_length=MAX_ITEMS)
    dimensions: int | None = Field(default=None, ge=1, le=MAX_DIMENSIONS)
    encoding_format: Literal["float", "base64"] = "float"
    cache: CachePolicy = CachePolicy()
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    #: Async lane only: send through the provider's Batch API where enabled (50 % off).
    batch: bool = False
    tags: dict[str, str] = Field(default_factory=dict, max_length=32)
    #: The API key's id (its own rate limits apply); set by the door, as on chat requests.
    api_key: str | None = Field(default=None, pattern=_NAME_PATTERN)
    #: The key's model allow-list: a named model outside it is refused, ``auto`` clamped in.
    allowed_models: tuple[str, ...] | None = Field(default=None, max_length=64)

    @property
    def max_tokens(self) -> int:
        """An embedding generates nothing: its worst case is its input (workers.attempts)."""
        return 0


def parse_embedding_request(data: dict[str, Any] | EmbeddingRequest) -> EmbeddingRequest:
    """Validate ``data`` (``input`` as OpenAI sends it, or ``inputs``) into a request, raising
    a ValidationError that names the field."""
    if isinstance(data, EmbeddingRequest):
        return data
    if not isinstance(data, dict):
        raise ValidationError(f"a request must be a mapping of fields, not "
                              f"{type(data).__name__}", field="request")
    fields = dict(data)
    if "input" in fields:
        fields["inputs"] = parse_input(fields.pop("input"))
    elif "inputs" not in fields:
        raise ValidationError("input is required: a string, a list of strings, or token "
                              "arrays", field="input")
    else:
        fields["inputs"] = parse_input(list(fields["inputs"]))
    try:
        return EmbeddingRequest.model_validate(fields)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = [str(p) for p in first["loc"]]
        field = "input" if where and where[0] == "inputs" else ".".join(where) or "request"
        raise ValidationError(f"{field}: {first['msg']}", field=field) from None


def parse_input(raw: Any) -> tuple[Item, ...]:
    """OpenAI's ``input``: a string, a list of strings, a token array or a list of them."""
    if isinstance(raw, str):
        return (_text(raw, "input"),)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValidationError("input must be a non-empty string, a list of strings, a token "
                              "array or a list of token arrays", field="input")
    if len(raw) > MAX_ITEMS:
        raise ValidationError(f"input has {len(raw)} items; at most {MAX_ITEMS} per request",
                              field="input")
    if all(_is_token(t) for t in raw):
        return (tuple(raw),)
    items: list[Item] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if isinstance(item, str):
            items.append(_text(item, where))
        elif isinstance(item, (list, tuple)) and item and all(_is_token(t) for t in item):
            items.append(tuple(item))
        else:
            raise ValidationError(f"{where} must be a non-empty string or a non-empty array "
                                  "of token ids (non-negative integers)", field=where)
    return tuple(items)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _text(value: str, where: str) -> str:
    if not value:
        raise ValidationError(f"{where} is an empty string; every input must have text",
                              field=where)
    return value


class EmbeddingResult(BaseModel):
    """The vectors of a request (float32, base64, in the caller's order) and what they cost."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    model: str
    provider: str
    route: Route
    #: Each item's vector as OpenAI's base64 format: little-endian float32.
    vectors: tuple[str, ...]
    #: Tokens of the items sent to the provider (cached items cost none).
    prompt_tokens: int = 0
    #: Tokens of every item, cached ones included (what the caller's usage reports).
    total_tokens: int = 0
    items: int = 0
    cached_items: int = 0
    cost: Decimal = Field(default=Decimal(0))
    baseline_cost: Decimal = Field(default=Decimal(0))
    list_cost: Decimal = Field(default=Decimal(0))
    price_version: str = ""
    batch: bool = False
    timings: Timings = Timings()

    def floats(self, index: int) -> list[float]:
        """Item ``index``'s vector as floats."""
        return decode_vector(self.vectors[index])

    @property
    def embeddings(self) -> list[list[float]]:
        """Every vector as floats, in the caller's order."""
        return [decode_vector(v) for v in self.vectors]


def encode_vector(values: Sequence[float]) -> str:
    """``values`` as little-endian float32, base64: the form OpenAI's ``base64`` answers use."""
    arr = array("f", values)
    if sys.byteorder != "little":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def decode_vector(data: str) -> list[float]:
    """The floats of a base64 float32 vector."""
    arr = array("f")
    arr.frombytes(base64.b64decode(data))
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tolist()


def shorten(values: Sequence[float], dimensions: int) -> list[float]:
    """The first ``dimensions`` values, scaled back to unit length (how text-embedding-3
    models answer ``dimensions``)."""
    head = list(values[:dimensions])
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [v / norm for v in head]


def item_digest(item: Item) -> str:
    """A digest of one input, text and token arrays apart (so ``"1"`` and ``[1]`` differ)."""
    h = hashlib.sha256()
    if isinstance(item, str):
        h.update(b"t\x00" + item.encode("utf-8"))
    else:
        h.update(b"k\x00" + ",".join(map(str, item)).encode("ascii"))
    return h.hexdigest()


def item_key(scope: str, model: str, dimensions: int, item: Item) -> str:
    """The per-item cache key: scope, model, vector size and the exact input.

    The input is keyed exactly (no lowercasing or whitespace folding): a model embeds
    ``"Paris"`` and ``"paris "`` differently, and a cached vector must be the one the provider
    would return for this very input.
    """
    return f"{scope}:{model}:{dimensions}:{item_digest(item)}"
