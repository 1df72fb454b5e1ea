"""The Anthropic Messages door's part of ``/openapi.json``: its bodies, answers and errors."""

from __future__ import annotations

from typing import Any

_REF = "#/components/schemas/"


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


_CACHE_CONTROL = {"type": "object", "required": ["type"], "properties": {
    "type": {"const": "ephemeral"}, "ttl": {"enum": ["5m", "1h"]}}}
_TEXT = {"type": "object", "required": ["type", "text"], "properties": {
    "type": {"const": "text"}, "text": {"type": "string", "minLength": 1},
    "cache_control": {"$ref": _REF + "CacheControl"}}}
_TOOL_USE = {"type": "object", "required": ["type", "id", "name", "input"], "properties": {
    "type": {"const": "tool_use"}, "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "input": {"type": "object"}}}
_TOOL_RESULT = {"type": "object", "required": ["type", "tool_use_id"], "properties": {
    "type": {"const": "tool_result"}, "tool_use_id": {"type": "string"},
    "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": _REF +
                                                                          "TextBlock"}}]},
    "is_error": {"type": "boolean"}, "cache_control": {"$ref": _REF + "CacheControl"}}}
_IMAGE = {"type": "object", "required": ["type", "source"], "properties": {
    "type": {"const": "image"}, "cache_control": {"$ref": _REF + "CacheControl"},
    "source": {"anyOf": [
        {"type": "object", "required": ["type", "media_type", "data"], "properties": {
            "type": {"const": "base64"},
            "media_type": {"enum": ["image/png", "image/jpeg", "image/gif", "image/webp"]},
            "data": {"type": "string", "contentEncoding": "base64"}}},
        {"type": "object", "required": ["type", "url"], "properties": {
            "type": {"const": "url"}, "url": {"type": "string", "pattern": "^https://"}}}]}}}
_THINKING = {"type": "object", "required": ["type", "thinking", "signature"], "properties": {
    "type": {"const": "thinking"}, "thinking": {"type": "string"},
    "signature": {"type": "string", "description": "Send it back unchanged."}}}
_REDACTED = {"type": "object", "required": ["type", "data"], "properties": {
    "type": {"const": "redacted_thinking"}, "data": {"type": "string"}}}
_USAGE = {"type": "object", "required": ["input_tokens", "output_tokens"], "properties": {
    "input_tokens": {"type": "integer", "description": "Uncached input only."},
    "output_tokens": {"type": "integer"},
    "cache_creation_input_tokens": {"type": ["integer", "null"]},
    "cache_read_input_tokens": {"type": ["integer", "null"]}}}
_COMMON = {
    "model": {"type": "string", "description": "A Claude model (honoured), another catalogue "
                                               "model, or auto / cheap / flagship."},
    "messages": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "InputMessage"}},
    "system": {"anyOf": [{"type": "string"},
                         {"type": "array", "items": {"$ref": _REF + "TextBlock"}}]},
    "tools": {"type": "array", "items": {"$ref": _REF + "AnthropicTool"}},
    "tool_choice": {"type": "object", "required": ["type"], "properties": {
        "type": {"enum": ["auto", "any", "tool", "none"]},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "disable_parallel_tool_use": {"type": "boolean"}}},
    "thinking": {"anyOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "disabled"}}},
        {"type": "object", "required": ["type", "budget_tokens"], "properties": {
            "type": {"const": "enabled"},
            "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 200000}}}]},
}

SCHEMAS: dict[str, Any] = {
    "CacheControl": _CACHE_CONTROL,
    "TextBlock": _TEXT,
    "InputMessage": {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"enum": ["user", "assistant"]},
        "content": {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "minItems": 1, "items": {"anyOf": [
                                  {"$ref": _REF + "TextBlock"}, _IMAGE, _TOOL_USE,
                                  _TOOL_RESULT, _THINKING, _REDACTED]}}]}}},
    "AnthropicTool": {"type": "object", "required": ["name", "input_schema"], "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "description": {"type": "string"}, "input_schema": {"type": "object"},
        "cache_control": {"$ref": _REF + "CacheControl"}}},
    "MessagesRequest": {
        "type": "object", "required": ["model", "max_tokens", "messages"],
        "additionalProperties": False, "properties": {
            **_COMMON,
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
            "stop_sequences": {"type": "array", "maxItems": 4,
                               "items": {"type": "string", "minLength": 1}},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
            "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
            "stream": {"type": "boolean", "description": "true: Anthropic's event stream, as "
                                                         "the answer is generated."},
            "service_tier": {"enum": ["auto", "standard_only"]}}},
    "CountTokensRequest": {"type": "object", "required": ["model", "messages"],
                           "additionalProperties": False, "properties": dict(_COMMON)},
    "TokenCount": {"type": "object", "required": ["input_tokens"],
                   "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
    "Message": {"type": "object",
                "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
                "properties": {
                    "id": {"type": "string"}, "type": {"const": "message"},
                    "role": {"const": "assistant"}, "model": {"type": "string"},
                    "content": {"type": "array", "items": {"anyOf": [
                        {"type": "object", "required": ["type", "text"], "properties": {
                            "type": {"const": "text"}, "text": {"type": "string"}}},
                        _TOOL_USE, _THINKING, _REDACTED]}},
                    "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence",
                                             "tool_use"]},
                    "stop_sequence": {"type": ["string", "null"]}, "usage": _USAGE}},
    "AnthropicError": {"type": "object", "required": ["type", "error"], "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"], "properties": {
            "type": {"type": "string"}, "message": {"type": "string"}}}}},
}

#: Anthropic's named server-sent events: message_start ... message_stop, ping, error.
_EVENTS = {"schema": {"type": "object", "required": ["data"], "properties": {
    "event": {"enum": ["message_start", "content_block_start", "content_block_delta",
                       "content_block_stop", "message_delta", "message_stop", "ping", "error"]},
    "data": {"type": "string", "minLength": 1}}}}
_ERRORS = {"default": {"description": "An error, in Anthropic's shape (529: overloaded).",
                       "content": _json("AnthropicError")}}


def paths(parameters: list[dict[str, Any]], sluice_headers: dict[str, Any]) -> dict[str, Any]:
    """The two operations; ``parameters`` are the ``x-sluice-*`` request headers."""
    forwarded = [{"name": name, "in": "header", "required": False, "schema": {"type": "string",
                  "pattern": "^[a-z0-9,.-]{1,200}$"}, "description": "Sent on to Anthropic."}
                 for name in ("anthropic-version", "anthropic-beta")]
    return {
        "/v1/messages": {"post": {
            "operationId": "createMessage", "parameters": parameters + forwarded,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": _json("MessagesRequest")},
            "responses": {"200": {"description": "The message (with stream: its events).",
                                  "headers": sluice_headers,
                                  "content": {**_json("Message"), "text/event-stream": _EVENTS}},
                          "202": {"description": "Accepted on the async lane: poll the job.",
                                  "content": _json("Job")}, **_ERRORS}}},
        "/v1/messages/count_tokens": {"post": {
            "operationId": "countMessageTokens", "parameters": forwarded,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": _json("CountTokensRequest")},
            "responses": {"200": {"description": "The prompt's tokens: Anthropic's own "
                                                 "count for a Claude model, the model's "
                                                 "tokenizer count otherwise.",
                                  "content": _json("TokenCount")}, **_ERRORS}}},
    }
