"""Embedding packs through the Gemini Batch API (``models/{m}:asyncBatchEmbedContent``, 50 % off).

The pack goes out as one inlined batch (``client.batches.create_embeddings``) named by its pack
id (``display_name``), polled with ``batches.get`` and read from
``dest.inlined_embed_content_responses``. Gemini reports no token count for embeddings: as on
the direct path (workers/embeddings/gemini.py) each caller is billed the count its reservation
used (the model's tokenizer), at the batch price, marked estimated; an answer that reports
``token_count`` for every item is billed by it, exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.embedding import Item, encode_vector
from models.domain.errors import (BatchPending, ProviderError, ProviderPermanent,
                                  ProviderRetryable)
from models.domain.settings import Settings
from models.domain.tokens import count_text_as
from workers.batch.seam import max_wait_s
from workers.embeddings.adapters import EmbedReply
from workers.embeddings.batch_poll import poll

#: What a pack's batch is named (``display_name``): the prefix, then the pack id.
PACK_PREFIX = "sluice_pack:"
_UNTAGGED = "sluicegate"
_FINAL = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                    "JOB_STATE_EXPIRED"})
#: How far before a pack's intent a batch carrying it may say it was created (clock skew).
_FIND_SLACK_S = 300.0


class GeminiEmbeddingBatch:
    """Sends one pack as one inlined embedding batch and waits for it (the lane's wait)."""

    name = "google"

    def __init__(self, settings: Settings) -> None:
        from workers.providers.gemini import GeminiProvider
        from workers.runtime import provider_key

        p = settings.providers
        self._client = GeminiProvider(
            api_key=provider_key(p.google_api_key, p.google_base_url, "GEMINI"),
            base_url=p.google_base_url, timeout=p.timeout_s).client
        self.poll_s = settings.batch.poll_interval_s
        self.wait_s = max_wait_s(settings)

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None,
              placed: Callable[[str], None] | None = None, pack: str = "") -> EmbedReply:
        """The pack's vectors from a new batch, ``placed(name)`` told once it is accepted."""
        texts = _texts(model, items)
        name = self.place(model, texts, dimensions, pack=pack)
        if placed is not None:
            placed(name)
        reply = self.collect(name, len(texts), timeout_s)
        if reply.exact:
            return reply
        tokenizer = model.embedding.tokenizer if model.embedding else "o200k_base"
        return EmbedReply(vectors=reply.vectors, exact=False, provider_model=model.name,
                          prompt_tokens=sum(count_text_as(t, tokenizer) for t in texts))

    def place(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              pack: str = "") -> str:
        """Submit the pack as one inlined batch named after ``pack``; the batch's name."""
        from google.genai import types

        config = types.EmbedContentConfig(output_dimensionality=dimensions) \
            if dimensions is not None else None
        src = types.EmbeddingsBatchJobSource(inlined_requests=types.EmbedContentBatch(
            contents=list(_texts(model, items)), config=config))
        try:
            with warnings.catch_warnings():  # "experimental": the wire is what we test
                warnings.simplefilter("ignore")
                job = self._client.batches.create_embeddings(
                    model=model.api_name or model.name, src=src,
                    config={"display_name": PACK_PREFIX + pack if pack else _UNTAGGED})
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise _mapped(exc) from exc
        return str(job.name)

    def find(self, pack: str, since: float) -> str | None:
        """The batch named after ``pack`` (newest first, back to ``since`` less the slack)."""
        try:
            for job in self._client.batches.list(config={"page_size": 100}):
                if job.display_name == PACK_PREFIX + pack:
                    return str(job.name)
                made = job.create_time
                if made is not None and made.timestamp() < since - _FIND_SLACK_S:
                    return None
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise _mapped(exc) from exc
        return None

    def collect(self, name: str, n: int, timeout_s: float | None = None) -> EmbedReply:
        """The ``n`` vectors of batch ``name`` within the wait (BatchPending past it)."""
        # No count reported: ``prompt_tokens`` 0 and ``exact`` False (the caller counts).
        wait = min(self.wait_s, timeout_s or self.wait_s)
        try:
            job = poll(lambda: self._client.batches.get(name=name),
                       lambda j: _state(j) in _FINAL, wait_s=wait, poll_s=self.poll_s,
                       pending=lambda w: BatchPending(
                           f"gemini embedding batch {name} still running after {w:.0f} s; "
                           "it stays pending and is polled again", provider=self.name,
                           batch_id=name, retry_in=max(self.poll_s, 0.05)))
        except BatchPending:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise _mapped(exc) from exc
        return self._reply(name, job, n)

    def _reply(self, name: str, job: Any, n: int) -> EmbedReply:
        state = _state(job)
        answers = list(getattr(job.dest, "inlined_embed_content_responses", None) or []) \
            if job.dest is not None else []
        # The provider bills what it embedded: a failure with any answer in it may be billed.
        billed = "unknown" if any(a.response is not None for a in answers) else None
        whole = len(answers) == n and all(a.response is not None for a in answers)
        if state != "JOB_STATE_SUCCEEDED" and not whole:
            # Cancelled before it ran, failed or expired: a batch with no vectors for the pack
            # billed none of it.
            raise ProviderRetryable(f"gemini embedding batch {name} ended {state} with "
                                    f"{len(answers)} answers for {n} inputs",
                                    provider=self.name, billed=billed)
        if len(answers) != n:
            raise ProviderRetryable(f"gemini embedding batch {name} answered {len(answers)} "
                                    f"of {n} inputs", provider=self.name, billed=billed)
        vectors, counts = [], []
        for i, answer in enumerate(answers):
            if answer.error is not None or answer.response is None:
                code = int(getattr(answer.error, "code", 0) or 0)
                kind = ProviderRetryable if code in (0, 429) or code >= 500 \
                    else ProviderPermanent
                raise kind(f"gemini embedding batch {name}, input {i}: "
                           f"{getattr(answer.error, 'message', None) or 'no answer'}",
                           provider=self.name, status=code or None, billed=billed)
            values = answer.response.embedding.values if answer.response.embedding else None
            if values is None:
                raise ProviderRetryable(f"gemini embedding batch {name}, input {i}: no vector",
                                        provider=self.name, billed="unknown",
                                        unparseable=True)
            vectors.append(encode_vector([float(v) for v in values]))
            counts.append(answer.response.token_count)
        if all(c is not None for c in counts):
            return EmbedReply(vectors=vectors, prompt_tokens=sum(int(c) for c in counts))
        return EmbedReply(vectors=vectors, prompt_tokens=0, exact=False)

    def cancel(self, name: str) -> None:
        """``batches.cancel``: a pack the provider had not embedded yet is not billed."""
        try:
            self._client.batches.cancel(name=name)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise _mapped(exc) from exc

    def close(self) -> None:
        self._client.close()


def _texts(model: ModelSpec, items: Sequence[Item]) -> list[str]:
    texts = [i for i in items if isinstance(i, str)]
    if len(texts) != len(items):
        raise ProviderPermanent(f"{model.name} takes text only: token arrays are in another "
                                "model's tokenizer", provider="google")
    return texts


def _state(job: Any) -> str:
    state = job.state
    return str(getattr(state, "value", state) or "")


def _mapped(exc: Exception) -> ProviderError:
    from workers.providers.gemini import map_genai_error

    return map_genai_error("google", exc)
