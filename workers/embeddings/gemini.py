"""Gemini embeddings through the official ``google-genai`` SDK (``models.embed_content``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.domain.catalogue import ModelSpec
from models.domain.embedding import Item, encode_vector
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.tokens import count_text_as
from workers.embeddings.adapters import EmbedReply


class GeminiEmbeddings:
    """One ``embed_content`` call (the Gemini API's ``:batchEmbedContents``) per ``embed``.

    The Gemini API's answer carries no token count, so the call is billed by the count the
    reservation used (the model's ``tokenizer`` per input: o200k_base) and marked estimated
    (``EmbedReply.exact``); an answer
    that does report ``usageMetadata.promptTokenCount`` is billed by it, exactly. countTokens
    per call would double the round trips for a count Gemini does not bill by either.
    """

    name = "google"

    def __init__(self, *, api_key: str | None, base_url: str | None = None,
                 timeout: float = 60.0, vertex: bool = False, project: str | None = None,
                 location: str | None = None) -> None:
        from workers.providers.gemini import GeminiProvider

        # The chat adapter's client: the same options (one attempt, v1beta, Vertex or not).
        self._client = GeminiProvider(api_key=api_key, base_url=base_url, timeout=timeout,
                                      vertex=vertex, project=project,
                                      location=location).client

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None) -> EmbedReply:
        from workers.providers.gemini import map_genai_error

        texts = [i for i in items if isinstance(i, str)]
        if len(texts) != len(items):
            raise ProviderPermanent(f"{model.name} takes text only: token arrays are in "
                                    "another model's tokenizer", provider=self.name)
        config: dict[str, Any] = {}
        if dimensions is not None:
            config["output_dimensionality"] = dimensions
        if timeout_s is not None:
            config["http_options"] = {"timeout": int(max(timeout_s, 0.1) * 1000),
                                      "retry_options": {"attempts": 1}}
        try:
            resp = self._client.models.embed_content(model=model.api_name or model.name,
                                                     contents=texts, config=config or None)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_genai_error(self.name, exc) from exc
        try:
            vectors = [encode_vector([float(v) for v in e.values]) for e in resp.embeddings]
        except (TypeError, AttributeError) as exc:
            raise ProviderRetryable(f"{self.name}: the embeddings response lacked {exc!r}; "
                                    "retried", provider=self.name, billed="unknown",
                                    unparseable=True) from exc
        if len(vectors) != len(items):
            raise ProviderRetryable(f"{self.name}: {len(vectors)} vectors for {len(items)} "
                                    "inputs; retried", provider=self.name, billed="unknown",
                                    unparseable=True)
        usage = getattr(resp, "usage_metadata", None)
        reported = getattr(usage, "prompt_token_count", None) if usage is not None else None
        if reported is not None:
            return EmbedReply(vectors=vectors, prompt_tokens=int(reported),
                              provider_model=model.name)
        tokenizer = model.embedding.tokenizer if model.embedding else "o200k_base"
        return EmbedReply(vectors=vectors,
                          prompt_tokens=sum(count_text_as(t, tokenizer) for t in texts),
                          provider_model=model.name, exact=False)

    def close(self) -> None:
        self._client.close()
