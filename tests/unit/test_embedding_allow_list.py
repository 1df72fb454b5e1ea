"""A key's allow-list on embedding requests: a named model outside it is refused, ``auto``
clamped to the cheapest allowed embedding model that can answer the size asked."""

from __future__ import annotations

import pytest

from models.domain.allow_list import clamp_embedding
from models.domain.catalogue import load_catalogue
from models.domain.embedding import parse_embedding_request
from models.domain.errors import NotAllowed
from models.domain.settings import EmbeddingSettings, RoutingSettings
from queues.embeddings import resolve_model

CAT = load_catalogue()
ROUTING = RoutingSettings()


def _req(model: str, allowed: list[str] | None, **extra: object) -> object:
    return parse_embedding_request({"team": "t", "feature": "f", "input": "x", "model": model,
                                    "allowed_models": allowed, **extra})


def test_a_named_model_outside_the_list_is_refused_naming_the_field() -> None:
    with pytest.raises(NotAllowed) as err:
        resolve_model(_req("text-embedding-3-small", ["text-embedding-3-large"]), CAT,
                      EmbeddingSettings(), ROUTING)
    assert err.value.details["field"] == "model"


def test_auto_is_clamped_to_the_cheapest_allowed_model_that_answers_the_size() -> None:
    allowed = ["text-embedding-3-large", "gemini-embedding-001", "text-embedding-ada-002"]
    model, why = resolve_model(_req("auto", allowed), CAT, EmbeddingSettings(), ROUTING)
    assert model.name == "text-embedding-ada-002" and "clamped" in why  # $0.10 < $0.13, $0.15
    # ada answers 1536 only: 256 dimensions go to the cheapest shortenable one.
    model, _ = resolve_model(_req("auto", allowed, dimensions=256), CAT, EmbeddingSettings(),
                             ROUTING)
    assert model.name == "text-embedding-3-large"


def test_an_allowed_choice_is_kept_and_no_list_changes_nothing() -> None:
    chosen = CAT.get("text-embedding-3-small")
    assert clamp_embedding(_req("auto", ["text-embedding-3-small"]), chosen, CAT,
                           ROUTING) == (chosen, "")
    model, why = resolve_model(_req("auto", None), CAT, EmbeddingSettings(), ROUTING)
    assert model.name == "text-embedding-3-small" and "clamped" not in why


def test_a_list_without_embedding_models_is_refused() -> None:
    with pytest.raises(NotAllowed) as err:
        resolve_model(_req("auto", ["cheap"]), CAT, EmbeddingSettings(), ROUTING)
    assert "no model this API key may use" in str(err.value)
