"""OpenAI chat-completions wire format: ``POST /v1/chat/completions``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from models.domain.catalogue import ModelSpec
from workers.providers.standin.caching import CacheUsage, openai_cache
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.pipeline import Answer, serve_call
from workers.providers.standin.prompt import openai_prompt
from workers.providers.standin.replies import make_reply, tool_use
from workers.providers.standin.state import StandInState


async def chat_completions(request: Request) -> Response:
    """Answer a chat-completions call the way api.openai.com would, minus the model."""
    return await serve_call(request, "openai", bearer_key, answer)


def bearer_key(request: Request) -> str:
    """The bearer token; 401 in OpenAI's shape when there is none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestInvalid("You didn't provide an API key. You need to provide your API key in "
                             "an Authorization header using Bearer auth.", status=401)
    return token.strip()


def answer(state: StandInState, body: dict[str, Any], spec: ModelSpec, api_key: str) -> Answer:
    """Validate the body, account for prompt caching and build the ``chat.completion``."""
    if body.get("stream") not in (None, True, False):
        raise RequestInvalid("stream must be a boolean", param="stream")
    if body.get("n") not in (None, 1):
        raise RequestInvalid("the stand-in answers with one choice only: n must be 1", param="n")
    max_tokens = _max_tokens(body)
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float))
                                        and 0 <= temperature <= 2):
        raise RequestInvalid("temperature must be a number between 0 and 2", param="temperature")
    stop = _stop(body.get("stop"))
    prompt = openai_prompt(body)
    # Real OpenAI routes by prefix hash and prompt_cache_key within an organization.
    scope = f"{api_key}\x00{spec.name}\x00{body.get('prompt_cache_key') or ''}"
    cached = openai_cache(prompt, state.openai_cache, scope, spec.min_cacheable_tokens,
                          state.config.openai_cache_ttl_s)
    reply = make_reply(f"{spec.name}|{prompt.digest}", prompt.last_user, max_tokens, stop)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None,
                               "annotations": []}
    finish, out_tokens = "length" if reply.finish == "length" else "stop", reply.tokens
    # After a tool's result the model answers in text (else a loop would never end).
    answered = body["messages"][-1].get("role") == "tool"
    call = None if answered else tool_use(prompt.last_user, [
        str((t.get("function") or {}).get("name")) for t in body.get("tools") or ()])
    if call is not None:
        message["content"], finish, out_tokens = None, "tool_calls", call.tokens
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}}]
    payload = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt.total,  # includes cached_tokens, as OpenAI's does
            "completion_tokens": out_tokens,
            "total_tokens": prompt.total + out_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_standin",
    }
    return Answer(payload, prompt.total, out_tokens, CacheUsage(read=cached))


def _max_tokens(body: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestInvalid(f"{field} must be a positive integer", param=field)
        return value
    return None


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return value
    raise RequestInvalid("stop must be a string or an array of at most 4 strings", param="stop")
