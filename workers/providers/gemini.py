"""Google Gemini adapter through the official ``google-genai`` SDK (Gemini API or Vertex AI)."""

from __future__ import annotations

import json
from typing import Any

from models.domain.errors import ProviderError, ProviderPermanent, ProviderRetryable
from models.domain.request import ToolCall
from models.domain.usage import Usage, from_gemini
from workers.providers.base import ProviderCall, ProviderReply, TextSink
from workers.providers.errors import (RETRYABLE_STATUS, _message, map_sdk_error,
                                      retry_after_seconds)
from workers.providers.gemini_shaping import gemini_request

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
           "RECITATION": "content_filter", "PROHIBITED_CONTENT": "content_filter",
           "BLOCKLIST": "content_filter", "SPII": "content_filter"}


class GeminiProvider:
    """One attempt per ``complete``/``stream``; the SDK's own retries are off."""

    name = "google"

    def __init__(self, *, api_key: str | None, base_url: str | None = None,
                 timeout: float = 60.0, vertex: bool = False, project: str | None = None,
                 location: str | None = None, http_client: Any = None) -> None:
        from google import genai
        from google.genai import types

        self._types = types
        options = types.HttpOptions(
            base_url=base_url, timeout=int(timeout * 1000), httpx_client=http_client,
            # One attempt: retries are ours (workers.providers.retry), in one place.
            retry_options=types.HttpRetryOptions(attempts=1),
            api_version=None if vertex else "v1beta")
        if vertex:
            # Vertex AI: a project and region with Google credentials, or an express-mode key.
            self._client = genai.Client(vertexai=True, project=project, location=location,
                                        api_key=api_key if not project else None,
                                        http_options=options)
        else:
            self._client = genai.Client(api_key=api_key, http_options=options)

    @property
    def client(self) -> Any:
        """The SDK client (the explicit-cache manager uses its ``caches``)."""
        return self._client

    def _args(self, call: ProviderCall) -> dict[str, Any]:
        name = call.model.api_name or call.model.name
        contents, cfg = gemini_request(call.request, call.model, call.cached_content)
        if call.timeout_s is not None:
            cfg["http_options"] = {"timeout": int(max(call.timeout_s, 0.1) * 1000),
                                   "retry_options": {"attempts": 1}}
        return {"model": name, "contents": contents, "config": cfg}

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Call models.generate_content once and normalize its usage."""
        try:
            resp = self._client.models.generate_content(**self._args(call))
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_genai_error(self.name, exc) from exc
        try:
            candidate = resp.candidates[0]
            parts = (candidate.content.parts if candidate.content is not None else None) or []
            text, calls = _read_parts(parts)
            usage = from_gemini(resp.usage_metadata)
        except (IndexError, TypeError, AttributeError) as exc:
            raise ProviderRetryable(f"{self.name}: the response lacked {exc!r}; retried",
                                    provider=self.name, billed="unknown",
                                    unparseable=True) from exc
        return _reply(text, calls, usage, _finish(candidate.finish_reason, calls), resp)

    def stream(self, call: ProviderCall, on_text: TextSink) -> ProviderReply:
        """models.generate_content_stream: each text piece to ``on_text`` as it arrives; usage
        from the last chunk that carries it."""
        text: list[str] = []
        calls: list[ToolCall] = []
        usage, finish, last = None, None, None
        try:
            for chunk in self._client.models.generate_content_stream(**self._args(call)):
                last = chunk
                usage = chunk.usage_metadata or usage
                for candidate in chunk.candidates or ():
                    finish = candidate.finish_reason or finish
                    parts = (candidate.content.parts if candidate.content else None) or []
                    piece, found = _read_parts(parts)
                    calls += found
                    if piece:
                        text.append(piece)
                        on_text(piece)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_genai_error(self.name, exc) from exc
        if usage is None or last is None:
            raise ProviderRetryable(f"{self.name}: the stream ended without usage metadata",
                                    provider=self.name, billed="unknown", unparseable=True)
        return _reply("".join(text), calls, from_gemini(usage), _finish(finish, calls), last)

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()


def _read_parts(parts: Any) -> tuple[str, list[ToolCall]]:
    """The answer's text (thought summaries left out) and its function calls."""
    text, calls = [], []
    for i, part in enumerate(parts):
        if part.function_call is not None:
            fc = part.function_call
            calls.append(ToolCall(id=fc.id or f"call_{i}_{fc.name}", name=fc.name or "",
                                  arguments=json.dumps(fc.args or {}, separators=(",", ":"))))
        elif part.text and not part.thought:
            text.append(part.text)
    return "".join(text), calls


def _finish(reason: Any, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"  # Gemini ends a call with STOP; the gateway's contract says so
    value = getattr(reason, "value", reason)
    return _FINISH.get(str(value or "STOP"), "stop")


def _reply(text: str, calls: list[ToolCall], usage: Usage, finish: str, resp: Any
           ) -> ProviderReply:
    return ProviderReply(text=text, usage=usage, finish_reason=finish,
                         tool_calls=tuple(calls), provider_model=str(resp.model_version or ""),
                         provider_request_id=str(resp.response_id or ""))


def map_genai_error(provider: str, exc: Exception) -> ProviderError:
    """Our typed error for an exception of the ``google-genai`` SDK (its APIError carries the
    HTTP status as ``code``); transport errors go through the shared mapping."""
    from google.genai import errors

    if not isinstance(exc, errors.APIError):
        return map_sdk_error(provider, exc)
    status = int(exc.code or 0)
    message = _message(exc) if exc.message is None else str(exc.message)[:300]
    if status in RETRYABLE_STATUS or status >= 500:
        headers = getattr(exc.response, "headers", None)
        return ProviderRetryable(f"{provider} answered {status} {exc.status}: {message}",
                                 provider=provider, status=status,
                                 retry_after=retry_after_seconds(headers))
    hint = {400: "the request was refused", 401: "check the API key",
            403: "check the API key (or the cached content no longer exists)",
            404: "check the model name in the price file"}
    return ProviderPermanent(f"{provider} answered {status} {exc.status}: {message} "
                             f"({hint.get(status, '')})", provider=provider, status=status)
