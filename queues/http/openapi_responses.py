"""The Responses door's part of ``/openapi.json``: its bodies, answers and stored responses."""

from __future__ import annotations

from typing import Any

_REF = "#/components/schemas/"
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


_PART = {"anyOf": [
    {"type": "object", "required": ["type", "text"], "properties": {
        "type": {"enum": ["input_text", "output_text"]}, "text": {"type": "string"}}},
    {"type": "object", "required": ["type", "image_url"], "properties": {
        "type": {"const": "input_image"}, "detail": {"enum": ["auto", "low", "high"]},
        "image_url": {"type": "string", "pattern": "^https://"}}}]}
_ITEM = {"anyOf": [
    {"type": "object", "required": ["role", "content"], "properties": {
        "type": {"const": "message"}, "role": {"enum": ["user", "assistant"]},
        "content": {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "minItems": 1, "items": _PART}]}}},
    {"type": "object", "required": ["type", "call_id", "name", "arguments"], "properties": {
        "type": {"const": "function_call"}, "call_id": _NAME, "name": _NAME,
        "arguments": {"type": "string"}}},
    {"type": "object", "required": ["type", "call_id", "output"], "properties": {
        "type": {"const": "function_call_output"}, "call_id": _NAME,
        "output": {"type": "string"}}}]}
_TOOL = {"type": "object", "required": ["type", "name"], "properties": {
    "type": {"const": "function"}, "name": _NAME, "description": {"type": "string"},
    "parameters": {"type": "object"}, "strict": {"type": "boolean"}}}
_ITEMS_OUT = {"type": "array", "items": {"type": "object", "required": ["type"],
                                         "properties": {"type": {"type": "string"}}}}

SCHEMAS: dict[str, Any] = {
    "ResponseRequest": {
        "type": "object", "required": ["model", "input"], "additionalProperties": False,
        "properties": {
            "model": {"type": "string"},
            "input": {"anyOf": [{"type": "string", "minLength": 1},
                                {"type": "array", "minItems": 1, "items": _ITEM}]},
            "instructions": {"type": "string"},
            "tools": {"type": "array", "items": _TOOL},
            "tool_choice": {"anyOf": [{"enum": ["auto", "none", "required"]},
                                      {"type": "object", "required": ["type", "name"],
                                       "properties": {"type": {"const": "function"},
                                                      "name": _NAME}}]},
            "max_output_tokens": {"type": "integer", "minimum": 16, "maximum": 4096},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "parallel_tool_calls": {"type": "boolean"},
            "reasoning": {"type": "object", "additionalProperties": False, "properties": {
                "effort": {"enum": ["minimal", "low", "medium", "high"]},
                "summary": {"enum": ["auto", "concise", "detailed"]}}},
            "text": {"type": "object", "additionalProperties": False, "properties": {
                "format": {"anyOf": [
                    {"type": "object", "required": ["type"], "properties": {
                        "type": {"enum": ["text", "json_object"]}}},
                    {"type": "object", "required": ["type", "name", "schema"], "properties": {
                        "type": {"const": "json_schema"}, "name": _NAME,
                        "schema": {"type": "object"}, "strict": {"type": "boolean"}}}]}}},
            "include": {"type": "array", "items": {"const": "reasoning.encrypted_content"}},
            "metadata": {"type": "object", "maxProperties": 16,
                         "additionalProperties": {"type": "string", "maxLength": 512}},
            "prompt_cache_key": {"type": "string", "minLength": 1, "maxLength": 64},
            "truncation": {"enum": ["auto", "disabled"]},
            "store": {"type": "boolean", "description": "Kept only where the feature keeps "
                                                        "text (else answered false)."},
            "previous_response_id": {"type": "string"},
            "stream": {"type": "boolean"}}},
    "Response": {"type": "object", "required": ["id", "object", "status", "model", "output"],
                 "properties": {"id": {"type": "string"}, "object": {"const": "response"},
                                "status": {"enum": ["completed", "incomplete"]},
                                "model": {"type": "string"}, "output": _ITEMS_OUT,
                                "store": {"type": "boolean"},
                                "usage": {"type": ["object", "null"]}}},
    "ResponseItemList": {"type": "object", "required": ["object", "data", "has_more"],
                         "properties": {"object": {"const": "list"}, "data": _ITEMS_OUT,
                                        "has_more": {"type": "boolean"}}},
    "ResponseDeleted": {"type": "object", "required": ["id", "deleted"], "properties": {
        "id": {"type": "string"}, "deleted": {"type": "boolean"}}},
}

#: The semantic server-sent events, each named and numbered.
_EVENTS = {"schema": {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string", "pattern": "^(response\\.[a-z_.]+|error)$"},
    "data": {"type": "string", "minLength": 1}}}}
_ID = {"name": "response_id", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,140}$"}}
_PAGE = [{"name": "order", "in": "query", "required": False,
          "schema": {"enum": ["asc", "desc"]}},
         {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
         {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}}]


def paths(parameters: list[dict[str, Any]], sluice_headers: dict[str, Any],
          errors: dict[str, Any]) -> dict[str, Any]:
    """The four operations; ``parameters`` are the ``x-sluice-*`` request headers."""
    return {
        "/v1/responses": {"post": {
            "operationId": "createResponse", "parameters": parameters,
            "requestBody": {"required": True, "content": _json("ResponseRequest")},
            "responses": {"200": {"description": "The response (with stream: its events).",
                                  "headers": sluice_headers,
                                  "content": {**_json("Response"),
                                              "text/event-stream": _EVENTS}},
                          "202": {"description": "Accepted on the async lane: poll the job.",
                                  "content": _json("Job")}, **errors}}},
        "/v1/responses/{response_id}": {
            "get": {"operationId": "getResponse", "parameters": [_ID],
                    "responses": {"200": {"description": "A kept response.",
                                          "content": _json("Response")}, **errors}},
            "delete": {"operationId": "deleteResponse", "parameters": [_ID],
                       "responses": {"200": {"description": "Forgotten.",
                                             "content": _json("ResponseDeleted")}, **errors}}},
        "/v1/responses/{response_id}/input_items": {"get": {
            "operationId": "listResponseInputItems", "parameters": [_ID, *_PAGE],
            "responses": {"200": {"description": "The items it answered.",
                                  "content": _json("ResponseItemList")}, **errors}}},
    }
