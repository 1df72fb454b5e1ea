"""OpenAI's embeddings wire format: ``POST /v1/embeddings``, deterministic vectors per input."""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text_as
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.openai_api import bearer_key
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.state import StandInState


async def embeddings(request: Request) -> Response:
    """Answer an embeddings call the way api.openai.com would (vectors are pseudo-random but
    fixed per model and input, so a test can recompute what the provider returns)."""
    return await serve_call(request, "openai", bearer_key, answer)


def answer(state: StandInState, body: dict[str, Any], spec: ModelSpec, api_key: str) -> Answer:
    """Validate the body and build the ``list`` of ``embedding`` objects with usage."""
    limits = spec.embedding
    if spec.kind != "embedding" or limits is None:
        raise RequestInvalid(f"{spec.name} does not support embeddings", param="model")
    items = _items(body.get("input"))
    if len(items) > limits.max_items:
        raise RequestInvalid(f"'input' has {len(items)} items; at most {limits.max_items}",
                             param="input")
    dims = body.get("dimensions")
    if dims is not None:
        if not limits.shortenable:
            raise RequestInvalid("This model does not support specifying dimensions.",
                                 param="dimensions")
        if (not isinstance(dims, int) or isinstance(dims, bool)
                or not 1 <= dims <= limits.dimensions):
            raise RequestInvalid(f"dimensions must be an integer from 1 to {limits.dimensions}",
                                 param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestInvalid("encoding_format must be 'float' or 'base64'",
                             param="encoding_format")
    counts = [tokens_of(item) for item in items]
    for i, n in enumerate(counts):
        if n > limits.max_item_tokens:
            raise RequestInvalid(f"This model's maximum context length is "
                                 f"{limits.max_item_tokens} tokens, however you requested {n} "
                                 f"tokens in input[{i}]", param="input")
    if sum(counts) > limits.max_call_tokens:
        raise RequestInvalid(f"Requested {sum(counts)} tokens, max {limits.max_call_tokens} "
                             "tokens per request", param="input")
    data = []
    for i, item in enumerate(items):
        vec = vector_for(spec.api_name or spec.name, item, limits.dimensions, dims)
        data.append({"object": "embedding", "index": i,
                     "embedding": to_base64(vec) if fmt == "base64" else vec})
    total = sum(counts)
    payload = {"object": "list", "data": data, "model": spec.api_name or spec.name,
               "usage": {"prompt_tokens": total, "total_tokens": total}}
    return Answer(payload=payload, prompt_tokens=total, output_tokens=0, cache=CacheUsage())


def _items(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestInvalid("'input' must be a non-empty string or array", param="input")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        return [tuple(raw)]
    out: list[Any] = []
    for item in raw:
        if isinstance(item, str) and item:
            out.append(item)
        elif (isinstance(item, list) and item
              and all(isinstance(t, int) and not isinstance(t, bool) for t in item)):
            out.append(tuple(item))
        else:
            raise RequestInvalid("'input' items must be non-empty strings or token arrays",
                                 param="input")
    return out


#: What api.openai.com counts embedding input with: cl100k_base, for text-embedding-3-* and
#: ada-002 alike (not the o200k_base of its chat models). Fixed here, not read from the
#: catalogue, so the gateway's own count is checked against the provider's, not itself.
ENCODING = "cl100k_base"


def tokens_of(item: Any) -> int:
    """Tokens billed for one input: cl100k for text, as OpenAI counts it; an array's length."""
    return count_text_as(item, ENCODING) if isinstance(item, str) else len(item)


def vector_for(model: str, item: Any, native: int, dimensions: int | None = None
               ) -> list[float]:
    """The stand-in's vector of ``item`` on ``model``: unit length, float32 values, shortened
    to ``dimensions`` the way text-embedding-3 models are (first values, renormalized)."""
    key = item if isinstance(item, str) else "\x00tokens:" + ",".join(map(str, item))
    raw = array("H")
    raw.frombytes(hashlib.shake_256(f"{model}\x00{key}".encode()).digest(2 * native))
    values = [v / 32767.5 - 1.0 for v in raw]
    if dimensions is not None:
        values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round through float32, as the real API's vectors are.
    return array("f", [v / norm for v in values]).tolist()


def to_base64(values: list[float]) -> str:
    """Little-endian float32, base64: OpenAI's ``encoding_format: base64``."""
    arr = array("f", values)
    if sys.byteorder != "little":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")
