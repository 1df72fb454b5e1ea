"""An embedding pack's batch found by its tag in the provider's batch list (the stand-in
pages ``GET /v1/batches`` as OpenAI does): what a run that died between the submit and its
record uses instead of paying for the pack again (workers/embeddings/batch_visits.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue
from models.domain.settings import load_settings
from workers.embeddings.batch import OpenAIEmbeddingBatch
from workers.providers.standin.batch_api import LIST_PATH

SMALL = load_catalogue().get("text-embedding-3-small")


@pytest.fixture()
def api(standin: Any) -> Iterator[OpenAIEmbeddingBatch]:
    standin.reset()
    client = OpenAIEmbeddingBatch(load_settings({
        "SLUICE_PROVIDERS__OPENAI_BASE_URL": standin.openai_base_url}))
    yield client
    client.close()


def test_a_pack_is_found_by_its_tag_past_the_first_page(api: OpenAIEmbeddingBatch,
                                                         standin: Any) -> None:
    since = time.time()
    oldest = api.place(SMALL, ["the oldest pack"], None, pack="pack-oldest")
    for i in range(101):  # more than one page (100) of newer batches
        api.place(SMALL, [f"filler {i}"], None, pack=f"filler-{i}")
    newest = api.place(SMALL, ["the newest pack"], None, pack="pack-newest")
    assert api.find("pack-newest", since) == newest
    assert api.find("pack-oldest", since) == oldest
    assert api.find("never-placed", since) is None
    assert int(standin.stats()["by_path"].get(LIST_PATH, 0)) >= 3
    # The found batch is the pack's: its vectors are collected as the placing run would have.
    assert len(api.collect(oldest, 1, 5).vectors) == 1


def test_an_untagged_submit_still_carries_the_source(api: OpenAIEmbeddingBatch) -> None:
    batch_id = api.place(SMALL, ["plain"], None)
    listed = {b.id: b for b in api._client.batches.list(limit=10)}
    assert listed[batch_id].metadata == {"source": "sluicegate"}
