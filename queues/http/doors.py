"""The doors: one wire format each around the shared pipeline, and Anthropic's count_tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.domain.errors import ValidationError
from models.domain.request import TIER_POLICIES, parse_request
from models.domain.tokens import count_request
from queues.http.pipeline import OPENAI_CHAT, door, door_endpoint, guarded, read_json
from queues.http.wire.anthropic_messages import AnthropicMessages, to_request
from queues.http.wire.base import Wire
from queues.http.wire.common import param_for

ANTHROPIC_MESSAGES = AnthropicMessages()
#: Every wire format by name (async jobs remember the one that created them).
WIRES: dict[str, Wire] = {w.name: w for w in (OPENAI_CHAT, ANTHROPIC_MESSAGES)}

#: ``POST /v1/chat/completions``.
chat_completions = door_endpoint(OPENAI_CHAT)
#: ``POST /v1/messages``.
messages = door_endpoint(ANTHROPIC_MESSAGES)


def wire_named(name: object) -> Wire:
    """The wire format called ``name`` (jobs from before the doors were named: OpenAI's)."""
    return WIRES.get(name, OPENAI_CHAT) if isinstance(name, str) else OPENAI_CHAT


async def _count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens``: the prompt's tokens as the budget reservation
    counts them (the same count the stand-in bills, and a model's own tokenizer elsewhere)."""
    fd = door(request)
    key = await fd.keys.principal(request)
    data, origin = to_request(await read_json(request), request.headers, key, counting=True)
    # A named model counts images by its own rule; UnknownModelError is a 404 naming it.
    spec = None if data["model"] in TIER_POLICIES else fd.catalogue.get(data["model"])
    try:
        counted = count_request(parse_request(data), spec)
    except ValidationError as err:
        err.field = err.details["field"] = param_for(err.field, origin)
        raise
    return JSONResponse({"input_tokens": counted})


count_tokens = guarded(_count_tokens, ANTHROPIC_MESSAGES)
