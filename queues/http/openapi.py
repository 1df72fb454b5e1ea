"""The front door's OpenAPI 3.1 document, served at ``/openapi.json`` (and fuzzed in tests)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from queues.http import openapi_messages

_REF = "#/components/schemas/"
#: The rules ChatRequest applies (models/domain/request.py), so valid examples reach the pipeline.
NAME_PATTERN = r"^[A-Za-z0-9._:\-/]{1,64}$"
ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_NULLABLE_STR = {"type": ["string", "null"]}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


#: A list of names, or null: any.
_NAMES_OR_ANY = {"type": ["array", "null"], "items": {"type": "string"}}
_ERRORS = {"default": {"description": "An error, in OpenAI's shape.", "content": _json("Error")}}
_SLUICE_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}} for name, text in (
        ("x-sluice-cost", "What this request cost, in USD (a decimal string)."),
        ("x-sluice-baseline-cost", "What it would have cost with no lever, in USD."),
        ("x-sluice-route", "tier=...; model=...; queue=..."),
        ("x-sluice-cache", "hit or miss (the response cache)."),
        ("x-sluice-request-id", "The request id, also the ledger row's and the job's id."),
        ("server-timing", "W3C Server-Timing, in ms: queue (enqueued to started), provider "
                          "(started to answered), total (enqueued to answered)."))}

#: Each server-sent event: a chat.completion.chunk as JSON, the last one the text [DONE].
_EVENTS = {"schema": {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "minLength": 1}, "event": {"const": "message"}}}}
_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string",
                                                                  "minLength": 1}}}
_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": _NULLABLE_STR, "code": _NULLABLE_STR}}}},
    # System/developer turns must lead, the last turn must be the user's or a tool's, and each
    # tool call gets one result right after its turn (not expressible here): the 400 then
    # names "messages".
    "Message": {"type": "object", "required": ["role"], "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "minItems": 1, "items": _TEXT_PART},
                              {"type": "null"}]},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"$ref": _REF + "ToolCall"}},
        "tool_call_id": {"type": "string", "minLength": 1}}},
    "ToolCall": {"type": "object", "required": ["id", "type", "function"], "properties": {
        "id": {"type": "string"}, "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"], "properties": {
            "name": {"type": "string"},
            "arguments": {"type": "string", "description": "A JSON object, as text."}}}}},
    "Tool": {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "parameters": {"type": "object"}}}}},
    "ChatCompletionRequest": {
        "type": "object", "required": ["model", "messages"], "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "auto, cheap, flagship, self-hosted, or "
                                                       "a catalogue model (GET /v1/models)."},
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": _REF + "Message"}},
            "tools": {"type": "array", "items": {"$ref": _REF + "Tool"}},
            "tool_choice": {"const": "auto"},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 4,
                                                     "items": {"type": "string"}},
                               {"type": "null"}]},
            "response_format": {"type": "object", "required": ["type"],
                                "properties": {"type": {"enum": ["text", "json_object"]}}},
            "user": {"type": "string"},
            "stream": {"type": ["boolean", "null"], "description": "true: the answer as "
                       "server-sent chat.completion.chunk events, as it is generated."},
            "stream_options": {"type": ["object", "null"], "description": "Only with stream.",
                               "properties": {"include_usage": {"type": ["boolean", "null"]}}},
            "n": {"enum": [1, None]},
            "top_p": {"type": ["number", "null"]},
            "seed": {"type": ["integer", "null"]},
            "metadata": {"type": ["object", "null"]}}},
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"},
            "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "finish_reason": {"type": "string"},
                "message": {"type": "object", "properties": {
                    "role": {"const": "assistant"}, "content": _NULLABLE_STR,
                    "tool_calls": {"type": "array",
                                   "items": {"$ref": _REF + "ToolCall"}}}}}}},
            "usage": {"type": "object", "required": ["prompt_tokens", "completion_tokens",
                                                     "total_tokens"], "properties": {
                "prompt_tokens": {"type": "integer", "description": "Includes cached tokens."},
                "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
                "prompt_tokens_details": {"type": "object", "properties": {
                    "cached_tokens": {"type": "integer"}}}}}}},
    "Job": {"type": "object", "required": ["id", "object", "status"], "properties": {
        "id": {"type": "string"}, "object": {"const": "sluice.job"},
        "status": {"enum": ["queued", "running", "completed", "failed", "cancelling",
                            "cancelled"]},
        "poll": {"type": "string"},
        "result": {"description": "In the format of the door that took the job.",
                   "anyOf": [{"$ref": _REF + "ChatCompletion"}, {"$ref": _REF + "Message"}]},
        "error": {"type": "object"}}},
    "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}}},
    "NewKey": {"type": "object", "required": ["team"], "additionalProperties": False,
               "properties": {"team": {"type": "string", "pattern": NAME_PATTERN},
                              "org": {"type": "string", "pattern": NAME_PATTERN,
                                      "description": "Default: the operator key's own org."},
                              "role": {"enum": ["team", "operator"]}, "name": {"type": "string"},
                              "feature": {"type": "string", "pattern": NAME_PATTERN,
                                          "description": "Binds the key: the feature billed "
                                                         "when a request names none, and the "
                                                         "only one with allow_features."},
                              "allow_features": {"type": "array", "maxItems": 100, "items": {
                                  "type": "string", "pattern": NAME_PATTERN}},
                              "allow_users": {"type": "array", "maxItems": 100, "items": {
                                  "type": "string", "pattern": NAME_PATTERN}},
                              "all_orgs": {"type": "boolean",
                                           "description": "An operator key acting in every "
                                                          "org (minted by one only)."}}},
    "MintedKey": {"type": "object", "required": ["id", "key", "team", "org", "role"],
                  "properties": {**{k: {"type": "string"} for k in
                                    ("id", "key", "team", "org", "role", "name", "feature")},
                                 "features": _NAMES_OR_ANY, "users": _NAMES_OR_ANY,
                                 "all_orgs": {"type": "boolean"}}},
    "KeyList": {"type": "object", "required": ["data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["ok", "degraded"]}, "database": {"type": "string"},
        "broker": {"type": "string"}, "shedding": {"type": "object"}}},
}

_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
#: An operator key reads or cancels another team's job of its org (any org's, deployment-wide).
_JOB_PARAMS = [_JOB_ID, *({"name": n, "in": "query", "required": False,
                           "description": f"Operator keys: the job's {n}.",
                           "schema": {"type": "string", "pattern": NAME_PATTERN}}
                          for n in ("team", "org"))]
_CHAT_PARAMS = [
    _header("x-sluice-feature", "The feature this request is billed to (default: the key's "
                                "feature); a 403 when the key may not bill it.",
            pattern=NAME_PATTERN),
    _header("x-sluice-user", "The end user, for attribution (overrides the body's user); a "
                             "403 when the key is bound to other users.",
            pattern=NAME_PATTERN),
    _header("x-sluice-lane", "interactive (wait for the answer) or async (202 and a job).",
            enum=["interactive", "async"]),
    _header("x-sluice-request-id", "Your id for this request: a retry with it is not billed "
                                   "twice.", pattern=ID_PATTERN),
    _header("x-sluice-cache-mode", "use, bypass or refresh the response cache.",
            enum=["use", "bypass", "refresh"]),
    _header("x-sluice-batch", "true: an async request may wait for a provider Batch API "
                              "(50 % off).", enum=["true", "false"]),
    _header("x-sluice-task-type", "The request's task type, for a feature with a model "
                                  "ladder (one of the feature's task types)."),
    _header("x-sluice-timeout", "Seconds you will wait (0 < t <= 86400; default: what your "
                                "SDK announces, or the lane's queue timeout). A request still "
                                "queued after it is not run and costs nothing.",
            pattern=r"^[1-9][0-9]{0,4}(\.[0-9]{1,3})?$"),
]


def openapi_schema(models: Sequence[str] = ()) -> dict[str, Any]:
    """The whole document; ``models`` (policies and catalogue names) become the model enum."""
    bearer = [{"bearer": []}]
    schemas = copy.deepcopy({**_SCHEMAS, **openapi_messages.SCHEMAS})
    if models:
        for name in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest"):
            schemas[name]["properties"]["model"]["enum"] = list(models)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sluicegate front door", "version": "1",
                 "description": "OpenAI chat completions and Anthropic messages through "
                                "sluicegate's cache, routing, budgets, queues and ledger."},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": bearer,
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion", "parameters": _CHAT_PARAMS,
                "requestBody": {"required": True, "content": _json("ChatCompletionRequest")},
                "responses": {"200": {"description": "The completion (with stream: its events).",
                                      "headers": _SLUICE_HEADERS,
                                      "content": {**_json("ChatCompletion"),
                                                  "text/event-stream": _EVENTS}},
                              "202": {"description": "Accepted on the async lane: poll the job.",
                                      "content": _json("Job")}, **_ERRORS}}},
            **openapi_messages.paths(copy.deepcopy(_CHAT_PARAMS), _SLUICE_HEADERS),
            "/v1/jobs/{job_id}": {
                "get": {"operationId": "getJob", "parameters": _JOB_PARAMS,
                        "responses": {"200": {"description": "The job.", "content": _json("Job")},
                                      **_ERRORS}},
                "delete": {"operationId": "cancelJob", "parameters": _JOB_PARAMS,
                           "responses": {"202": {"description": "Cancelling: not sent to a "
                                                                "provider unless already started.",
                                                 "content": _json("Job")}, **_ERRORS}}},
            "/v1/models": {"get": {
                "operationId": "listModels",
                "responses": {"200": {"description": "Policies and catalogue models.",
                                      "content": _json("ModelList")}, **_ERRORS}}},
            "/admin/keys": {
                "post": {"operationId": "createKey",
                         "requestBody": {"required": True, "content": _json("NewKey")},
                         "responses": {"201": {"description": "The new key, shown once.",
                                               "content": _json("MintedKey")}, **_ERRORS}},
                "get": {"operationId": "listKeys",
                        "parameters": [{"name": n, "in": "query", "required": False,
                                        "schema": {"type": "string"}} for n in ("team", "org")],
                        "responses": {"200": {"description": "Keys (never their secrets).",
                                              "content": _json("KeyList")}, **_ERRORS}}},
            "/admin/keys/{key_id}": {"delete": {
                "operationId": "revokeKey",
                "parameters": [{"name": "key_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Revoked."}, **_ERRORS}}},
            "/admin/health": {"get": {
                "operationId": "health",
                "responses": {"200": {"description": "Ledger and broker reachable.",
                                      "content": _json("Health")}, **_ERRORS}}},
        },
    }
