"""One contract over the hosted embedding adapters (OpenAI's SDK, google-genai) against the
stand-in: vectors in order, sizes, token counts, and faults becoming our typed errors."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.domain.catalogue import load_catalogue
from models.domain.embedding import decode_vector
from models.domain.errors import ProviderPermanent, ProviderRetryable
from models.domain.tokens import count_text_as
from workers.embeddings.adapters import OpenAIEmbeddings
from workers.embeddings.gemini import GeminiEmbeddings
from workers.providers.standin.embeddings_api import vector_for

CAT = load_catalogue()
#: adapter name -> (model, fault family, whether the provider reports token counts)
CASES = {"openai": ("text-embedding-3-small", "openai", True),
         "google": ("gemini-embedding-001", "gemini", False)}


@pytest.fixture(params=sorted(CASES))
def case(request: Any, standin: Any) -> Iterator[tuple[Any, Any, str, bool]]:
    standin.reset()
    model, family, exact = CASES[request.param]
    if request.param == "openai":
        prov: Any = OpenAIEmbeddings(api_key="sk-test", base_url=standin.openai_base_url,
                                     timeout=5)
    else:
        prov = GeminiEmbeddings(api_key="gm-test", base_url=standin.gemini_base_url, timeout=5)
    yield prov, CAT.get(model), family, exact
    prov.close()


def _f32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


def test_vectors_come_back_in_order_with_the_inputs_tokens(case: Any) -> None:
    prov, model, _family, exact = case
    texts = [f"chunk {i} of the returns policy" for i in range(7)]
    reply = prov.embed(model, texts, None)
    native = model.embedding.dimensions
    assert [decode_vector(v) for v in reply.vectors] == [
        _f32(vector_for(model.name, t, native)) for t in texts]
    assert reply.prompt_tokens == sum(count_text_as(t, model.embedding.tokenizer) for t in texts)
    assert reply.exact is exact  # Gemini reports no count: ours, marked estimated


def test_dimensions_shorten_the_vector(case: Any) -> None:
    prov, model, _family, _exact = case
    reply = prov.embed(model, ["a short text"], 256)
    got = decode_vector(reply.vectors[0])
    assert len(got) == 256
    assert got == _f32(vector_for(model.name, "a short text", model.embedding.dimensions, 256))


@pytest.mark.parametrize(("fault", "error"), [
    ("429;retry-after=1", ProviderRetryable), ("503", ProviderRetryable),
    ("400", ProviderPermanent), ("malformed", ProviderRetryable),
    ("incomplete", ProviderRetryable)])
def test_faults_become_typed_errors(case: Any, standin: Any, fault: str, error: type) -> None:
    prov, model, family, _exact = case
    standin.script_faults([fault], path=family)
    with pytest.raises(error):
        prov.embed(model, ["x"], None)


def test_a_timeout_is_retryable(case: Any, standin: Any) -> None:
    prov, model, family, _exact = case
    standin.script_faults(["timeout=3"], path=family)
    with pytest.raises(ProviderRetryable):
        prov.embed(model, ["x"], None, timeout_s=0.5)


def test_gemini_goes_through_batch_embed_contents_and_refuses_token_arrays(standin: Any) -> None:
    standin.reset()
    model = CAT.get("gemini-embedding-001")
    prov = GeminiEmbeddings(api_key="gm-test", base_url=standin.gemini_base_url, timeout=5)
    try:
        prov.embed(model, ["one", "two"], 768)
        with pytest.raises(ProviderPermanent):
            prov.embed(model, [(1, 2, 3)], None)
    finally:
        prov.close()
    paths = standin.stats()["by_path"]
    assert paths.get("/v1beta/models/gemini-embedding-001:batchEmbedContents") == 1


def test_the_standin_speaks_embed_content_and_caps_a_batch_at_100(standin: Any) -> None:
    base = standin.gemini_base_url.rstrip("/") + "/v1beta/models/gemini-embedding-001"
    head = {"x-goog-api-key": "gm-test"}
    one = httpx.post(f"{base}:embedContent", headers=head, timeout=5,
                     json={"content": {"parts": [{"text": "hello"}]},
                           "outputDimensionality": 64})
    assert one.status_code == 200
    assert one.json()["embedding"]["values"] == vector_for("gemini-embedding-001", "hello",
                                                           3072, 64)
    many = {"requests": [{"model": "models/gemini-embedding-001",
                          "content": {"parts": [{"text": f"t{i}"}]}} for i in range(101)]}
    over = httpx.post(f"{base}:batchEmbedContents", headers=head, json=many, timeout=5)
    assert over.status_code == 400 and "at most 100" in over.text
    faulted = httpx.post(f"{base}:embedContent", timeout=5,
                         headers={**head, "x-standin-fault": "429;retry-after=2"},
                         json={"content": {"parts": [{"text": "hello"}]}})
    assert faulted.status_code == 429 and faulted.headers["retry-after"] == "2"
