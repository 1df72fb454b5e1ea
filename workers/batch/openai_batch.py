"""OpenAI Batch API: a JSONL file of chat-completions requests, ``batches.create``, 24 h window."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from models.domain.errors import ProviderPermanent, ProviderRetryable
from workers.batch.base import BatchState, Outcome, reply_extra
from workers.providers.base import ProviderCall
from workers.providers.errors import RETRYABLE_STATUS, map_sdk_error
from workers.providers.openai_chat import reply_of
from workers.providers.openai_responses import reply_of as responses_reply_of
from workers.providers.openai_responses import responses_body
from workers.providers.shaping import openai_chat_body

ENDPOINT = "/v1/chat/completions"
#: A Responses-door request's batch (the collector groups calls by endpoint).
RESPONSES_ENDPOINT = "/v1/responses"


def endpoint_of(call: ProviderCall) -> str:
    """The OpenAI endpoint ``call`` is batched on: its door's (reasoning items round-trip)."""
    return RESPONSES_ENDPOINT if call.request.openai_responses is not None else ENDPOINT
#: Statuses after which a batch changes no more.
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatchAPI:
    """Uploads one JSONL file per batch and reads the output and error files when it ends."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 http_client: Any = None) -> None:
        import openai

        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                     max_retries=0, http_client=http_client)

    def submit(self, calls: Sequence[tuple[str, ProviderCall]]) -> str:
        """Upload the requests as a ``purpose=batch`` file and create the batch."""
        endpoint = endpoint_of(calls[0][1])  # one endpoint per batch (the collector's group)
        shape = responses_body if endpoint == RESPONSES_ENDPOINT else openai_chat_body
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": endpoint,
                             "body": shape(call)}, separators=(",", ":"))
                 for cid, call in calls]
        try:
            upload = self._client.files.create(
                file=("sluice-batch.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
            batch = self._client.batches.create(input_file_id=upload.id, endpoint=endpoint,
                                                completion_window="24h",
                                                metadata={"source": "sluicegate"})
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        return str(batch.id)

    def poll(self, batch_id: str) -> BatchState:
        """``batches.retrieve``: ended once the status is final."""
        try:
            batch = self._client.batches.retrieve(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc
        return BatchState(ended=batch.status in _FINAL, status=str(batch.status))

    def results(self, batch_id: str) -> dict[str, Outcome]:
        """Read the output file (answers) and the error file (refused requests)."""
        try:
            batch = self._client.batches.retrieve(batch_id)
            out: dict[str, Outcome] = {}
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    text = self._client.files.content(file_id).text
                    out.update(self._parse(batch_id, text))
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc
        return out

    def _parse(self, batch_id: str, text: str) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            out[str(entry.get("custom_id"))] = self._outcome(batch_id, entry)
        return out

    def _outcome(self, batch_id: str, entry: dict[str, Any]) -> Outcome:
        response = entry.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if status == 200 and body.get("object") == "response":
            return dataclasses.replace(responses_reply_of(body), extra=reply_extra(batch_id))
        if status == 200 and body.get("choices") and isinstance(body["choices"][0], dict) \
                and isinstance(body["choices"][0].get("message"), dict):
            # Read as the single call's answer is (logprobs, tool calls and all).
            return reply_of(body, extra=reply_extra(batch_id))
        error = entry.get("error") or (body.get("error") if isinstance(body, dict) else None)
        message = (error or {}).get("message") or f"status {status}"
        text = f"openai batch {batch_id}: request answered {status or 'nothing'}: {message}"
        if status in RETRYABLE_STATUS or status >= 500 or status == 0:
            return ProviderRetryable(text, provider=self.name, status=status or None)
        return ProviderPermanent(text, provider=self.name, status=status)

    def cancel(self, batch_id: str) -> None:
        """``batches.cancel``: completed requests stay in the output file (billed), the rest
        end in the error file as ``batch_cancelled``."""
        try:
            self._client.batches.cancel(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise map_sdk_error(self.name, exc) from exc

    def close(self) -> None:
        """Close the SDK's HTTP client."""
        self._client.close()
