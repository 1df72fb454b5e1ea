"""Cloud platforms' paths to the same models: Bedrock and Vertex (Claude), Azure OpenAI (GPT).

Each rewrites its request into the wire format it carries and answers through the shared
pipeline, so faults, prompt caching and counters work as on the providers' own paths:

- Bedrock: ``POST /model/{id}/invoke`` and ``/invoke-with-response-stream`` as the anthropic
  SDK's ``AnthropicBedrock`` calls them: no ``model`` in the body, ``anthropic_version``
  in the body, a SigV4 ``Authorization`` (accepted, not checked), and a stream in
  AWS event-stream framing (each event a ``chunk`` whose ``bytes`` are the base64 JSON event).
- Vertex: ``POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict``
  and ``:streamRawPredict`` (server-sent events), ``anthropic_version`` in the body.
- Azure: ``POST /openai/deployments/{d}/chat/completions?api-version=...`` with ``api-key``.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from workers.providers.standin import anthropic_api, openai_api
from workers.providers.standin.errors import RequestInvalid
from workers.providers.standin.pipeline import serve_call


def platform_routes() -> list[Route]:
    """The Bedrock, Vertex and Azure routes."""
    vertex = "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{target}"
    return [Route("/model/{model_id:path}/invoke", bedrock_invoke, methods=["POST"]),
            Route("/model/{model_id:path}/invoke-with-response-stream", bedrock_invoke,
                  methods=["POST"]),
            Route(vertex, vertex_predict, methods=["POST"]),
            Route("/openai/deployments/{deployment}/chat/completions", azure_chat,
                  methods=["POST"])]


# --- Bedrock ----------------------------------------------------------------------------------

def _aws_key(request: Request) -> str:
    """A SigV4 signature (its access key id) or a Bedrock API key (bearer); 403 without."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("AWS4-HMAC-SHA256 ") and "Credential=" in auth:
        return auth.split("Credential=", 1)[1].split("/", 1)[0]
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    raise RequestInvalid("Missing Authentication Token", status=403)


def _bedrock_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _version(body)
    if "model" in body:
        raise RequestInvalid("model: Extra inputs are not permitted (the model is in the path)")
    out = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    out["model"] = request.path_params["model_id"]
    out["stream"] = request.url.path.endswith("/invoke-with-response-stream")
    return out


def _version(body: dict[str, Any]) -> None:
    """The platforms take the API version in the body (``bedrock-2023-05-31`` and
    ``vertex-2023-10-16`` historically; the SDK now sends its own API version there)."""
    if not isinstance(body.get("anthropic_version"), str) or not body["anthropic_version"]:
        raise RequestInvalid("anthropic_version: Field required")


def event_frame(payload: bytes, headers: dict[str, str]) -> bytes:
    """One AWS event-stream message: prelude (lengths, CRC), string headers, payload, CRC."""
    head = b"".join(struct.pack("!B", len(k)) + k.encode() + b"\x07"
                    + struct.pack("!H", len(v)) + v.encode() for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", binascii.crc32(message))


def _bedrock_frames(events: Iterator[tuple[bytes, str]]) -> Iterator[tuple[bytes, str]]:
    """Server-sent events re-framed as Bedrock's ``chunk`` events."""
    for raw, text in events:
        data = next((line[6:] for line in raw.decode().splitlines()
                     if line.startswith("data: ")), None)
        if data is None:
            continue
        chunk = json.dumps({"bytes": base64.b64encode(data.encode()).decode()}).encode()
        yield event_frame(chunk, {":event-type": "chunk", ":content-type": "application/json",
                                  ":message-type": "event"}), text


_bedrock_frames.media_type = "application/vnd.amazon.eventstream"  # type: ignore[attr-defined]


async def bedrock_invoke(request: Request) -> Response:
    """Claude through Bedrock's runtime API."""
    return await serve_call(request, "bedrock", _aws_key, anthropic_api.answer,
                            prepare=_bedrock_body, frame=_bedrock_frames)


# --- Vertex -----------------------------------------------------------------------------------

def _vertex_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    model, _, verb = request.path_params["target"].rpartition(":")
    if verb not in ("rawPredict", "streamRawPredict") or not model:
        raise RequestInvalid(f"unknown method {verb!r}: use rawPredict or streamRawPredict",
                             status=404)
    _version(body)
    if "model" in body:
        raise RequestInvalid("model: Extra inputs are not permitted (the model is in the path)")
    if (verb == "streamRawPredict") != bool(body.get("stream")):
        raise RequestInvalid("stream: streamRawPredict streams, rawPredict does not")
    out = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    out["model"] = model
    return out


def _google_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestInvalid("Request is missing required authentication credential. Expected "
                             "OAuth 2 access token.", status=401)
    return token.strip()


async def vertex_predict(request: Request) -> Response:
    """Claude through Vertex AI's publisher model endpoint."""
    return await serve_call(request, "vertex", _google_token, anthropic_api.answer,
                            prepare=_vertex_body)


# --- Azure OpenAI -----------------------------------------------------------------------------

def _azure_key(request: Request) -> str:
    key = request.headers.get("api-key", "").strip()
    if key:
        return key
    return openai_api.bearer_key(request)  # Entra ID tokens come as a bearer


def _azure_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    if not request.query_params.get("api-version"):
        raise RequestInvalid("Missing required query parameter: api-version", status=404)
    return {**body, "model": request.path_params["deployment"]}


async def azure_chat(request: Request) -> Response:
    """GPT through an Azure OpenAI deployment (its name picks the model)."""
    return await serve_call(request, "azure", _azure_key, openai_api.answer,
                            prepare=_azure_body)
