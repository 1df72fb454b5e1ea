"""Gemini API embeddings: ``models/{model}:embedContent`` and ``:batchEmbedContents``.

Vectors are the OpenAI stand-in's (fixed per model and text, shortened to
``outputDimensionality``), so a test can recompute what the provider returns. As the Gemini
API does, the answer carries no token count; the stand-in counts o200k tokens for its totals.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.catalogue import ModelSpec
from models.domain.tokens import count_text
from workers.providers.standin.caching import CacheUsage
from workers.providers.standin.embeddings_api import vector_for
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.faults import fault_response
from workers.providers.standin.pipeline import _fault, pause
from workers.providers.standin.state import StandInState

_FAMILY = "gemini"
#: The Gemini API's own cap on one batchEmbedContents call.
MAX_BATCH = 100


async def embed(request: Request, state: StandInState, body: dict[str, Any], spec: ModelSpec,
                method: str) -> Response:
    """Answer ``embedContent`` (one ``content``) or ``batchEmbedContents`` (``requests``),
    after any injected fault for the model."""
    limits = spec.embedding
    if spec.kind != "embedding" or limits is None:
        raise RequestInvalid(f"models/{spec.name} is not found for API version v1beta, or is "
                             f"not supported for {method}.", status=404)
    fault = _fault(request, state, spec.name, _FAMILY)
    if fault is not None:
        state.faults_injected += 1
        if fault.kind in ("timeout", "slow"):
            await pause(request, fault.delay_s)
        elif fault.kind != "cut":
            return fault_response(fault, _FAMILY)
    state.record_model(spec.name)
    state.record_body(_FAMILY, {**body, "model": spec.name})
    if method == "embedContent":
        text, dims = _one(body, spec, "")
        state.record_usage(count_text(text), 0, CacheUsage())
        return JSONResponse({"embedding": {"values": _vector(spec, text, dims)}})
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise RequestInvalid("* BatchEmbedContentsRequest.requests: must not be empty")
    if len(requests) > MAX_BATCH:
        raise RequestInvalid(f"* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} "
                             "requests can be in one batch")
    out, tokens = [], 0
    for i, item in enumerate(requests):
        if not isinstance(item, dict):
            raise RequestInvalid(f"* BatchEmbedContentsRequest.requests[{i}]: not an object")
        named = str(item.get("model", f"models/{spec.name}")).removeprefix("models/")
        if named not in (spec.name, spec.api_name):
            raise RequestInvalid(f"* BatchEmbedContentsRequest.requests[{i}].model: "
                                 f"{named} differs from the batch's model {spec.name}")
        text, dims = _one(item, spec, f"requests[{i}].")
        tokens += count_text(text)
        out.append({"values": _vector(spec, text, dims)})
    state.record_usage(tokens, 0, CacheUsage())
    return JSONResponse({"embeddings": out})


def _one(req: dict[str, Any], spec: ModelSpec, where: str) -> tuple[str, int | None]:
    """The text of one EmbedContentRequest and its ``outputDimensionality``."""
    assert spec.embedding is not None
    parts = (req.get("content") or {}).get("parts") if isinstance(req.get("content"),
                                                                  dict) else None
    if not isinstance(parts, list) or not parts:
        raise RequestInvalid(f"* {where}content.parts: must not be empty")
    if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        raise RequestInvalid(f"* {where}content.parts: {spec.name} embeds text parts only")
    text = "".join(p["text"] for p in parts)
    if not text:
        raise RequestInvalid(f"* {where}content: the text is empty")
    if count_text(text) > spec.embedding.max_item_tokens:
        raise RequestInvalid(f"* {where}content: the input has more than "
                             f"{spec.embedding.max_item_tokens} tokens")
    dims = req.get("outputDimensionality", req.get("output_dimensionality"))
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool)
                             or not 1 <= dims <= spec.embedding.dimensions):
        raise RequestInvalid(f"* {where}output_dimensionality: must be from 1 to "
                             f"{spec.embedding.dimensions}")
    return text, dims


def _vector(spec: ModelSpec, text: str, dims: int | None) -> list[float]:
    assert spec.embedding is not None
    return vector_for(spec.api_name or spec.name, text, spec.embedding.dimensions, dims)
