"""A streamed answer the door already holds whole, in any door's event format.

A cache hit or a self-hosted answer is complete before the first byte, so its events go out
in one body with the ``x-sluice-*`` cost headers; :mod:`queues.http.relay` sends a worker's
answer piece by piece with the same encoder.
"""

from __future__ import annotations

from starlette.responses import Response

from models.domain.result import ChatResult
from queues.http.wire.base import Encoder
from queues.http.wire.common import sluice_headers


def stream_response(result: ChatResult, encoder: Encoder) -> Response:
    """The whole event stream in one body: nothing is held open and no error can arrive
    mid-stream."""
    return Response(encoder.whole(result), media_type="text/event-stream",
                    headers={**sluice_headers(result), "cache-control": "no-cache"})


async def settled_response(result: ChatResult, encoder: Encoder) -> Response:
    """:func:`stream_response`, after the encoder's optional ``settle`` (a door that keeps
    its answers, as the Responses door does, stores it before the events go out)."""
    await settle(encoder, result)
    return stream_response(result, encoder)


async def settle(encoder: Encoder, result: ChatResult) -> None:
    """Await ``encoder.settle(result)`` when the encoder has one."""
    hook = getattr(encoder, "settle", None)
    if hook is not None:
        await hook(result)
