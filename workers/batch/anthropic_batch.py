"""Anthropic Message Batches: inline ``messages.batches.create``, polled, results read as JSONL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.thinking import thinking_of
from models.domain.usage import from_anthropic
from workers.batch.base import BatchState, Outcome, reply_extra
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.anthropic_messages import with_reasoning
from workers.providers.errors import map_sdk_error
from workers.providers.shaping import anthropic_message_params
from workers.providers.tool_calls import calls_in_anthropic_content

_FINISH = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop",
           "tool_use": "tool_calls"}
#: Error types worth another try (the rest are the request's own fault).
_RETRYABLE = frozenset({"rate_limit_error", "overloaded_error", "api_error", "timeout_error"})


class AnthropicBatchAPI:
    """One Message Batch per submit; results are matched back by ``custom_id``."""

    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 http_client: Any = None) -> None:
        import anthropic

        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                           max_retries=0, http_client=http_client)

    def submit(self, calls: Sequence[tuple[str, ProviderCall]]) -> str:
        """Create the batch with every request inline."""
        requests = [{"custom_id": cid, "params": anthropic_message_params(call)}
                    for cid, call in calls]
        try:
            batch = self._client.messages.batches.create(
                requests=requests)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        return str(batch.id)

    def poll(self, batch_id: str) -> BatchState:
        """``messages.batches.retrieve``: ended once ``processing_status`` is ``ended``."""
        try:
            batch = self._client.messages.batches.retrieve(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc
        return BatchState(ended=batch.processing_status == "ended",
                          status=str(batch.processing_status))

    def results(self, batch_id: str) -> dict[str, Outcome]:
        """Stream the results file and turn each line into a reply or a typed error."""
        out: dict[str, Outcome] = {}
        try:
            for entry in self._client.messages.batches.results(batch_id):
                out[entry.custom_id] = self._outcome(batch_id, entry.result)
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc
        return out

    def _outcome(self, batch_id: str, result: Any) -> Outcome:
        kind = getattr(result, "type", "")
        if kind == "succeeded":
            msg = result.message
            text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text")
            stop = msg.stop_reason or ""
            calls = calls_in_anthropic_content(msg.content)
            thinking = thinking_of(msg.content)
            # Thinking is output, split out as reasoning as the single call splits it.
            usage = with_reasoning(from_anthropic(msg.usage), bool(thinking), text, calls)
            return ProviderReply(text=text, usage=usage, tool_calls=calls, thinking=thinking,
                                 finish_reason=_FINISH.get(stop, "stop"),
                                 stop_sequence=(msg.stop_sequence or None
                                                if stop == "stop_sequence" else None),
                                 provider_model=str(msg.model), provider_request_id=str(msg.id),
                                 extra=reply_extra(batch_id))
        if kind == "errored":
            inner = getattr(getattr(result, "error", None), "error", None)
            etype = str(getattr(inner, "type", "api_error"))
            message = f"anthropic batch {batch_id}: {etype}: {getattr(inner, 'message', '')}"
            if etype in _RETRYABLE:
                return ProviderRetryable(message, provider=self.name)
            return ProviderPermanent(message, provider=self.name, status=400)
        # canceled or expired: nothing was billed; another try may well succeed.
        return ProviderRetryable(f"anthropic batch {batch_id}: request {kind}",
                                 provider=self.name)

    def cancel(self, batch_id: str) -> None:
        """``messages.batches.cancel``: requests not yet processed end as ``canceled``."""
        try:
            self._client.messages.batches.cancel(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()
