"""OpenAI's embeddings wire format: a ``/v1/embeddings`` body into EmbeddingRequest fields, and
an EmbeddingResult back into OpenAI's ``list`` of ``embedding`` objects."""

from __future__ import annotations

from typing import Any

from models.domain.embedding import EmbeddingResult
from models.domain.errors import ValidationError
from queues.http.wire.common import (H_CACHE, H_FEATURE, H_LANE, H_REQUEST_ID, H_USER,
                                     caller_timeout)

#: The body's parameters, as OpenAI documents them.
PARAMS = ("input", "model", "dimensions", "encoding_format", "user")


def to_embedding_request(body: dict[str, Any], headers: Any, *, team: str, org: str,
                         key_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """EmbeddingRequest fields for an OpenAI body, and where each came from (a 400's param)."""
    origin = {"feature": H_FEATURE, "lane": H_LANE, "request_id": H_REQUEST_ID,
              "cache": H_CACHE}
    for name in body:
        if name not in PARAMS:
            raise ValidationError(f"unrecognized request argument supplied: {name}", field=name)
    for name in ("model", "input"):
        if name not in body:
            raise ValidationError(f"you must provide {name}", field=name)
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise ValidationError("encoding_format must be 'float' or 'base64'",
                              field="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise ValidationError("dimensions must be a positive integer", field="dimensions")
    data: dict[str, Any] = {"team": team, "org": org, "model": body["model"],
                            "input": body["input"],
                            "feature": headers.get(H_FEATURE) or "default",
                            "lane": headers.get(H_LANE) or "interactive",
                            "tags": {"key": key_id}}
    if dims is not None:
        data["dimensions"] = dims
    if body.get("encoding_format") is not None:
        data["encoding_format"] = body["encoding_format"]
    user = headers.get(H_USER) or body.get("user")
    if user is not None:
        data["user"] = user
        origin["user"] = H_USER if headers.get(H_USER) else "user"
    if headers.get(H_REQUEST_ID):
        data["request_id"] = headers[H_REQUEST_ID]
    if headers.get(H_CACHE):
        data["cache"] = {"mode": headers[H_CACHE]}
    timeout = caller_timeout(headers, sdk=True)
    if timeout is not None:
        data["timeout_s"] = timeout
    return data, origin


def render(result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    """OpenAI's answer: one ``embedding`` per input, in order, and the inputs' tokens."""
    data = [{"object": "embedding", "index": i,
             "embedding": v if encoding_format == "base64" else result.floats(i)}
            for i, v in enumerate(result.vectors)]
    # Usage counts every input, as the provider would have: what this request saved is in
    # the x-sluice headers and the ledger.
    return {"object": "list", "data": data, "model": result.model,
            "usage": {"prompt_tokens": result.total_tokens,
                      "total_tokens": result.total_tokens}}


def headers_of(result: EmbeddingResult) -> dict[str, str]:
    """What the levers did, in ``x-sluice-*`` response headers."""
    t = result.timings
    return {"x-sluice-request-id": result.request_id,
            "x-sluice-cost": format(result.cost, "f"),
            "x-sluice-baseline-cost": format(result.baseline_cost, "f"),
            "x-sluice-route": f"tier=embedding; model={result.model}; "
                              f"queue={result.route.queue}",
            "x-sluice-cached-items": f"{result.cached_items}/{result.items}",
            "server-timing": f"queue;dur={t.queued_ms:.1f}, provider;dur={t.provider_ms:.1f}, "
                             f"total;dur={t.total_ms:.1f}"}
