"""Embedding packs through OpenAI's Batch API (``/v1/embeddings`` lines, 50 % off); Gemini's
is in workers/embeddings/gemini_batch.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.embedding import EmbeddingRequest, Item
from models.domain.errors import BatchPending, ProviderPermanent, ProviderRetryable
from models.domain.settings import Settings
from workers.batch.seam import max_wait_s
from workers.embeddings.adapters import EmbedReply, _as_base64
from workers.embeddings.batch_poll import poll
from workers.providers.errors import map_sdk_error

ENDPOINT = "/v1/embeddings"
_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: The batch metadata key naming the pack a batch carries (workers/embeddings/placements.py).
PACK_KEY = "sluice_pack"
#: How far before a pack's intent a batch carrying it may say it was created (clock skew).
_FIND_SLACK_S = 300.0


def batch_api(rt: Any, provider: str = "openai") -> Any:
    """The worker process's embedding Batch API client of ``provider``, built on first use."""
    key = f"embeddings:{provider}-batch"
    found = rt.providers.get(key)
    if found is None:
        if provider == "google":
            from workers.embeddings.gemini_batch import GeminiEmbeddingBatch

            found = GeminiEmbeddingBatch(rt.settings)
        else:
            found = OpenAIEmbeddingBatch(rt.settings)
        rt.providers[key] = found
    return found


def wants_batch(request: EmbeddingRequest, provider: str, settings: Settings) -> bool:
    """An async request to OpenAI or the Gemini API that opted in (``batch``, or settings)."""
    if request.lane != "async" or provider not in ("openai", "google"):
        return False
    if provider == "google" and settings.providers.google_vertex:
        return False
    return (request.batch or settings.batch.enabled
            or request.feature in settings.batch.features)


class OpenAIEmbeddingBatch:
    """Sends one pack as a one-line batch file and waits for it (the lane's wait, its poll)."""

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        import openai

        from workers.runtime import provider_key

        p = settings.providers
        self._client = openai.OpenAI(
            api_key=provider_key(p.openai_api_key, p.openai_base_url, "OPENAI"),
            base_url=p.openai_base_url, timeout=p.timeout_s, max_retries=0)
        self.poll_s = settings.batch.poll_interval_s
        self.wait_s = max_wait_s(settings)

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None,
              placed: Callable[[str], None] | None = None, pack: str = "") -> EmbedReply:
        """The pack's vectors from a new batch; ``placed(batch_id)`` is told where it went as
        soon as the provider accepted it (the batch is paid for from then on). ``pack`` tags
        the batch's metadata, so a run that died before hearing its id can find it
        (:meth:`find`). Raises like a direct call, and BatchPending when the batch outlasts
        the wait."""
        batch_id = self.place(model, items, dimensions, pack=pack)
        if placed is not None:
            placed(batch_id)
        return self.collect(batch_id, len(items), timeout_s)

    def find(self, pack: str, since: float) -> str | None:
        """The id of the batch tagged ``pack`` (its metadata), or None: the batches list is
        read newest first, back to those created a few minutes before ``since`` (epoch s,
        when the pack was about to be placed)."""
        try:
            for batch in self._client.batches.list(limit=100):
                if (batch.metadata or {}).get(PACK_KEY) == pack:
                    return str(batch.id)
                if batch.created_at and batch.created_at < since - _FIND_SLACK_S:
                    return None
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        return None

    def place(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              pack: str = "") -> str:
        """Submit the pack as a one-line batch (tagged ``pack``); its id."""
        body: dict[str, Any] = {"model": model.api_name or model.name,
                                "input": [i if isinstance(i, str) else list(i) for i in items],
                                "encoding_format": "base64"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        metadata = {"source": "sluicegate", **({PACK_KEY: pack} if pack else {})}
        line = json.dumps({"custom_id": "pack", "method": "POST", "url": ENDPOINT,
                           "body": body}, separators=(",", ":"))
        try:
            upload = self._client.files.create(file=("sluice-embed.jsonl", (line + "\n").encode()),
                                               purpose="batch")
            batch = self._client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                                completion_window="24h",
                                                metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        return str(batch.id)

    def collect(self, batch_id: str, n: int, timeout_s: float | None = None) -> EmbedReply:
        """The ``n`` vectors of batch ``batch_id``, waiting at most the lane's wait for it:
        BatchPending past it (the batch runs on and bills; its task comes back to poll)."""
        wait = min(self.wait_s, timeout_s or self.wait_s)
        try:
            batch = poll(lambda: self._client.batches.retrieve(batch_id),
                         lambda b: b.status in _FINAL, wait_s=wait, poll_s=self.poll_s,
                         pending=lambda w: BatchPending(
                             f"openai embedding batch {batch_id} still running after {w:.0f} "
                             "s; it stays pending and is polled again", provider=self.name,
                             batch_id=batch_id, retry_in=max(self.poll_s, 0.05)))
            files = [f for f in (batch.output_file_id, batch.error_file_id) if f]
            text = "".join(self._client.files.content(f).text for f in files)
        except BatchPending:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        return self._reply(batch_id, text, n)

    def _reply(self, batch_id: str, text: str, n: int) -> EmbedReply:
        entry = next((json.loads(x) for x in text.splitlines() if x.strip()), {})
        response = entry.get("response") or {}
        status, body = int(response.get("status_code") or 0), response.get("body") or {}
        if status != 200:
            message = ((entry.get("error") or body.get("error") or {}).get("message")
                       or f"status {status}")
            kind = ProviderRetryable if status == 0 or status >= 500 or status == 429 \
                else ProviderPermanent
            raise kind(f"openai embedding batch {batch_id}: {message}", provider=self.name,
                       status=status or None)
        data = sorted(body["data"], key=lambda d: int(d["index"]))
        if len(data) != n:
            raise ProviderRetryable(f"openai embedding batch {batch_id}: {len(data)} vectors "
                                    f"for {n} inputs", provider=self.name, billed="unknown",
                                    unparseable=True)
        return EmbedReply(vectors=[_as_base64(d["embedding"]) for d in data],
                          prompt_tokens=int(body["usage"]["prompt_tokens"]),
                          provider_model=str(body.get("model", "")))

    def cancel(self, batch_id: str) -> None:
        """``batches.cancel``: a pack the provider had not embedded yet is not billed; one it
        had stays in the output file (billed, and collected as usual)."""
        try:
            self._client.batches.cancel(batch_id)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc

    def close(self) -> None:
        self._client.close()
