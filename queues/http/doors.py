"""The doors: one wire format each around the shared pipeline, and Anthropic's count_tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.errors import ValidationError
from models.domain.request import TIER_POLICIES
from queues.http.counting import ours
from queues.http.pipeline import OPENAI_CHAT, door, door_endpoint, guarded, read_json
from queues.http.responses_state import ResponsesDoor
from queues.http.wire.anthropic_messages import FORWARDED, AnthropicMessages, to_request
from queues.http.wire.base import Wire
from queues.http.wire.common import param_for

ANTHROPIC_MESSAGES = AnthropicMessages()
OPENAI_RESPONSES = ResponsesDoor()
#: Every wire format by name (async jobs remember the one that created them).
WIRES: dict[str, Wire] = {w.name: w for w in (OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_RESPONSES)}

#: ``POST /v1/chat/completions``.
chat_completions = door_endpoint(OPENAI_CHAT)
#: ``POST /v1/messages``.
messages = door_endpoint(ANTHROPIC_MESSAGES)
#: ``POST /v1/responses``.
responses = door_endpoint(OPENAI_RESPONSES)


def wire_named(name: object) -> Wire:
    """The wire format called ``name`` (jobs from before the doors were named: OpenAI's)."""
    return WIRES.get(name, OPENAI_CHAT) if isinstance(name, str) else OPENAI_CHAT


async def _count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: Anthropic's count for a Claude model (exact: what
    the request is billed by), the model's tokenizer count otherwise."""
    fd = door(request)
    key = await fd.keys.principal(request)
    body = await read_json(request)
    data, origin = to_request(body, request.headers, key, counting=True)
    # A named model counts images by its own rule; UnknownModelError is a 404 naming it.
    spec = None if data["model"] in TIER_POLICIES else fd.catalogue.get(data["model"])
    try:
        counted = ours(data, spec)  # also validates the body as a request would be
    except ValidationError as err:
        err.field = err.details["field"] = param_for(err.field, origin)
        raise
    if spec is not None and spec.provider == "anthropic" and fd.counter is not None:
        sent = {h: request.headers[h] for h in FORWARDED if request.headers.get(h)}
        exact = await fd.counter.count(spec, body, sent)
        if exact is not None:
            return JSONResponse({"input_tokens": exact},
                                headers={"x-sluice-count": "provider"})
    return JSONResponse({"input_tokens": counted}, headers={"x-sluice-count": "tokenizer"})


count_tokens = guarded(_count_tokens, ANTHROPIC_MESSAGES)
