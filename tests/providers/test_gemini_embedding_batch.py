"""Gemini embedding batches through google-genai against the stand-in: create, poll, collect,
find by name, cancel (workers/embeddings/gemini_batch.py, standin/gemini_batch.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.domain.catalogue import load_catalogue
from models.domain.embedding import decode_vector
from models.domain.errors import BatchPending, ProviderPermanent, ProviderRetryable
from models.domain.settings import load_settings
from models.domain.tokens import count_text_as
from workers.embeddings.gemini_batch import PACK_PREFIX, GeminiEmbeddingBatch
from workers.providers.standin.batch_api import DELAY_HEADER
from workers.providers.standin.embeddings_api import vector_for

GEMINI = load_catalogue().get("gemini-embedding-001")
CREATE = f"/v1beta/models/{GEMINI.name}:asyncBatchEmbedContent"


@pytest.fixture()
def api(standin: Any) -> Iterator[GeminiEmbeddingBatch]:
    standin.reset()
    client = GeminiEmbeddingBatch(load_settings({
        "SLUICE_PROVIDERS__GOOGLE_BASE_URL": standin.gemini_base_url,
        "SLUICE_PROVIDERS__GOOGLE_API_KEY": "gm-test"}))
    yield client
    client.close()


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b))


def test_a_pack_is_created_polled_and_collected_billed_by_our_count(
        api: GeminiEmbeddingBatch, standin: Any) -> None:
    texts = ["a gemini batch text", "another one, a little longer"]
    placed: list[str] = []
    reply = api.embed(GEMINI, texts, 64, timeout_s=10, placed=placed.append, pack="p-1")
    assert placed and placed[0].startswith("batches/")
    assert [len(decode_vector(v)) for v in reply.vectors] == [64, 64]
    for got, text in zip(reply.vectors, texts):
        assert _close(decode_vector(got), vector_for(GEMINI.name, text, 3072, 64))
    # Gemini reports no count: ours (the model's tokenizer), billed estimated.
    assert not reply.exact
    assert reply.prompt_tokens == sum(count_text_as(t, GEMINI.embedding.tokenizer)
                                      for t in texts)
    paths = standin.stats()["by_path"]
    assert paths.get(CREATE) == 1
    assert paths.get(f"/v1beta/models/{GEMINI.name}:batchEmbedContents") is None
    # A later visit collects the same batch (no count: the caller's own counts bill it).
    again = api.collect(placed[0], 2, 5)
    assert again.vectors == reply.vectors and not again.exact and again.prompt_tokens == 0


def test_a_slow_batch_is_pending_then_succeeds(api: GeminiEmbeddingBatch, standin: Any
                                               ) -> None:
    api._client._api_client._http_options.headers[DELAY_HEADER] = "1.5"
    name = api.place(GEMINI, ["slow one"], None, pack="slow")
    job = api._client.batches.get(name=name)
    assert job.state.value in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
    with pytest.raises(BatchPending):
        api.collect(name, 1, 0.2)
    time.sleep(1.5)
    reply = api.collect(name, 1, 5)
    assert _close(decode_vector(reply.vectors[0]), vector_for(GEMINI.name, "slow one", 3072))


def test_a_pack_is_found_by_its_name_past_the_first_page(api: GeminiEmbeddingBatch,
                                                          standin: Any) -> None:
    since = time.time()
    oldest = api.place(GEMINI, ["the oldest pack"], None, pack="pack-oldest")
    for i in range(101):  # more than one page (100) of newer batches
        api.place(GEMINI, [f"filler {i}"], None, pack=f"filler-{i}")
    assert api.find("pack-oldest", since) == oldest
    assert api.find("never-placed", since) is None
    listed = standin.stats()["by_path"].get("/v1beta/batches", 0)
    # A pack whose intent is much newer than every batch: the look stops at the first page.
    assert api.find("never-placed", time.time() + 3600) is None
    assert standin.stats()["by_path"].get("/v1beta/batches", 0) == listed + 1
    names = {j.name: j.display_name for j in api._client.batches.list(config={"page_size": 5})}
    assert all(d.startswith(PACK_PREFIX) for d in names.values())


def test_a_cancelled_batch_bills_nothing_and_yields_no_vectors(api: GeminiEmbeddingBatch,
                                                               standin: Any) -> None:
    api._client._api_client._http_options.headers[DELAY_HEADER] = "30"
    before = standin.stats()
    name = api.place(GEMINI, ["to be cancelled"], None, pack="gone")
    api.cancel(name)
    assert api._client.batches.get(name=name).state.value == "JOB_STATE_CANCELLED"
    with pytest.raises(ProviderRetryable):
        api.collect(name, 1, 1)
    after = standin.stats()
    assert after["tokens"]["prompt"] == before["tokens"]["prompt"]


def test_token_arrays_and_unknown_batches_are_refused(api: GeminiEmbeddingBatch,
                                                      standin: Any) -> None:
    with pytest.raises(ProviderPermanent):
        api.place(GEMINI, [(1, 2, 3)], None)
    with pytest.raises(ProviderPermanent):
        api.collect("batches/nope", 1, 1)
    standin.script_faults(["429;retry-after=0"], model=GEMINI.name, path="gemini")
    with pytest.raises(ProviderRetryable):
        api.place(GEMINI, ["throttled"], None)
    r = httpx.get(standin.gemini_base_url.rstrip("/") + "/v1beta/batches",
                  headers={"x-goog-api-key": "k"}, timeout=5)
    assert r.status_code == 200 and "operations" in r.json()
