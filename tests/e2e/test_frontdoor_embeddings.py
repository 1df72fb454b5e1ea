"""``POST /v1/embeddings`` through the official openai SDK, the real door and real workers."""

from __future__ import annotations

import base64
import time
import uuid
from array import array
from decimal import Decimal
from typing import Any

import openai
import pytest

from models.db import ledger
from models.domain.catalogue import load_catalogue
from models.domain.tokens import count_text
from tests.billed import wait_written
from tests.e2e.frontdoor_support import mint, row
from workers.providers.standin.embeddings_api import tokens_of, vector_for

pytestmark = pytest.mark.integration

MODEL = "text-embedding-3-small"
PRICE = load_catalogue().get(MODEL).price.input
GEMINI = "gemini-embedding-001"
GEMINI_PRICE = load_catalogue().get(GEMINI).price.input
GEMINI_PATH = f"/v1beta/models/{GEMINI}:batchEmbedContents"


def _texts(n: int, tag: str | None = None) -> list[str]:
    tag = tag or uuid.uuid4().hex[:8]
    return [f"chunk {i} of the returns policy ({tag})" for i in range(n)]


def _f32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


def _calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/embeddings", 0))


def _rid() -> str:
    return f"emb-{uuid.uuid4().hex}"


def test_a_valid_user_reaches_the_ledger_rows(client: openai.OpenAI, sessions: Any) -> None:
    """OpenAI's ``user`` field attributes the request: on its row, and on the row of its
    items the item cache answered."""
    texts = _texts(2)
    user = f"analyst-{uuid.uuid4().hex[:6]}"
    first, second = _rid(), _rid()
    client.embeddings.create(model=MODEL, input=texts[:1], user=user,
                             extra_headers={"x-sluice-request-id": first})
    client.embeddings.create(model=MODEL, input=texts, user=user,  # the first item cached
                             extra_headers={"x-sluice-request-id": second})
    deadline = time.time() + 10  # the cached part's row is written off the hot path
    while time.time() < deadline:
        with sessions() as s:
            if ledger.get(s, f"{second}:cached") is not None:
                break
        time.sleep(0.1)
    rows = [row(sessions, rid) for rid in (first, second, f"{second}:cached")]
    assert [(r.user, r.outcome, r.items) for r in rows] == [
        (user, "ok", 1), (user, "ok", 1), (user, "cache_hit", 1)]


def test_a_single_string_returns_the_providers_vector_and_is_billed_exactly(
        client: openai.OpenAI, sessions: Any, standin: Any) -> None:
    text = _texts(1)[0]
    rid = _rid()
    res = client.embeddings.create(model=MODEL, input=text,
                                   extra_headers={"x-sluice-request-id": rid,
                                                  "x-sluice-feature": "search"})
    assert len(res.data) == 1 and res.data[0].index == 0
    assert _f32(res.data[0].embedding) == vector_for(MODEL, text, 1536)
    assert res.usage.prompt_tokens == tokens_of(text)
    r = row(sessions, rid)
    assert (r.kind, r.items, r.input_uncached, r.outcome) == ("embedding", 1, tokens_of(text),
                                                              "ok")
    assert r.cost == tokens_of(text) * PRICE / 1_000_000
    assert r.attempts == 1


def test_a_list_of_100_comes_back_in_order(client: openai.OpenAI, standin: Any) -> None:
    texts = _texts(100)
    res = client.embeddings.create(model="auto", input=texts)
    assert [d.index for d in res.data] == list(range(100))
    assert all(_f32(d.embedding) == vector_for(MODEL, t, 1536) for d, t in zip(res.data, texts))
    assert res.usage.prompt_tokens == sum(tokens_of(t) for t in texts)


def test_base64_and_dimensions(client: openai.OpenAI) -> None:
    text = _texts(1)[0]
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=[text], dimensions=256,
                                                     encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    vec = array("f")
    vec.frombytes(base64.b64decode(b64))
    assert len(vec) == 256
    assert vec.tolist() == vector_for(MODEL, text, 1536, 256)
    # The SDK's default asks for base64 and decodes it: the same vector.
    again = client.embeddings.create(model=MODEL, input=text, dimensions=256)
    assert _f32(again.data[0].embedding) == vec.tolist()


def test_token_arrays(client: openai.OpenAI) -> None:
    tokens = [[1, 2, 3, int(time.time()) % 50_000], [7, 8]]
    res = client.embeddings.create(model=MODEL, input=tokens)
    assert [_f32(d.embedding) for d in res.data] == [vector_for(MODEL, tuple(t), 1536)
                                                    for t in tokens]
    assert res.usage.prompt_tokens == 6


def test_a_partly_cached_list_sends_only_the_missing_items_and_answers_in_order(
        client: openai.OpenAI, sessions: Any, standin: Any) -> None:
    texts = _texts(10)
    first = _rid()
    client.embeddings.create(model=MODEL, input=texts[:6], extra_headers={
        "x-sluice-request-id": first, "x-sluice-feature": "kb"})
    tokens_before = standin.stats()["tokens"]["prompt"]
    calls = _calls(standin)
    rid = _rid()
    mixed = [texts[7], texts[2], texts[8], texts[0], texts[7], texts[5], texts[9]]
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=mixed, extra_headers={
        "x-sluice-request-id": rid, "x-sluice-feature": "kb"})
    res = raw.parse()
    assert [_f32(d.embedding) for d in res.data] == [vector_for(MODEL, t, 1536) for t in mixed]
    assert raw.headers["x-sluice-cached-items"] == "3/7"
    assert _calls(standin) == calls + 1
    missing = {texts[7], texts[8], texts[9]}  # each sent once, though texts[7] came twice
    sent_tokens = sum(tokens_of(t) for t in missing)
    assert standin.stats()["tokens"]["prompt"] - tokens_before == sent_tokens
    r = row(sessions, rid)
    assert (r.items, r.input_uncached) == (3, sent_tokens)
    assert r.cost == sent_tokens * PRICE / 1_000_000
    assert Decimal(raw.headers["x-sluice-cost"]) == r.cost
    hit = wait_written(sessions, f"{rid}:cached")  # its $0 row is written off the hot path
    assert hit is not None, "the cached part has no ledger row"
    assert (hit.outcome, hit.items, hit.cost, hit.kind) == ("cache_hit", 3, 0, "embedding")
    assert hit.baseline_cost == sum(tokens_of(t) for t in (texts[2], texts[0], texts[5])) \
        * PRICE / 1_000_000


def test_a_wholly_cached_request_is_not_sent(client: openai.OpenAI, standin: Any) -> None:
    texts = _texts(3)
    client.embeddings.create(model=MODEL, input=texts)
    calls = _calls(standin)
    res = client.embeddings.create(model=MODEL, input=list(reversed(texts)))
    assert _calls(standin) == calls
    assert [_f32(d.embedding) for d in res.data] == [vector_for(MODEL, t, 1536)
                                                    for t in reversed(texts)]


def test_a_vector_of_one_model_is_never_served_for_another(client: openai.OpenAI) -> None:
    text = _texts(1)[0]
    small = client.embeddings.create(model=MODEL, input=text)
    large = client.embeddings.create(model="text-embedding-3-large", input=text)
    assert len(large.data[0].embedding) == 3072
    assert _f32(large.data[0].embedding) == vector_for("text-embedding-3-large", text, 3072)
    short = client.embeddings.create(model=MODEL, input=text, dimensions=512)
    assert len(short.data[0].embedding) == 512 != len(small.data[0].embedding)


def test_budget_refusal_is_a_429_and_nothing_is_sent(door: str, pg_url: str, sessions: Any,
                                                     standin: Any) -> None:
    admission = pytest.importorskip("scheduler.admission")
    from models.db.budgets import set_budget

    with sessions() as s:
        set_budget(s, "team", "embed-frugal", "total", hard=Decimal("0.0000001"))
        s.commit()
    time.sleep(admission.AdmissionConfig().budget_cache_ttl_s + 0.2)
    sdk = openai.OpenAI(api_key=mint(pg_url, "embed-frugal"), base_url=door + "/v1",
                        max_retries=0)
    calls = _calls(standin)
    with pytest.raises(openai.RateLimitError) as exc:
        sdk.embeddings.create(model=MODEL, input=_texts(200))
    body = exc.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    assert "team:embed-frugal:total" in body["message"]
    assert _calls(standin) == calls


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"input": ["fine", ""]}, "input[1]"),
    ({"input": []}, "input"),
    ({"input": [["a"]]}, "input[0]"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "user": "has spaces"}, "user"),
])
def test_bad_input_is_a_400_naming_the_field(client: openai.OpenAI, kwargs: dict[str, Any],
                                             param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model=MODEL, **kwargs)
    assert exc.value.param == param


def test_models_that_cannot_embed_here_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as chat:
        client.embeddings.create(model="gpt-4o-mini", input="x")
    assert chat.value.status_code in (400, 404) and "not an embedding model" in \
        chat.value.message
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=256)
    assert dims.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model="gemini-embedding-001", input=[[1, 2, 3]])
    assert tokens.value.param == "input[0]" and "text only" in tokens.value.message


def test_gemini_embeds_through_google_genai_billed_as_estimated(
        client: openai.OpenAI, sessions: Any, standin: Any) -> None:
    from sqlalchemy import select

    from models.db.attempts import AttemptRow

    texts = _texts(3)
    rid = _rid()
    before = int(standin.stats()["by_path"].get(GEMINI_PATH, 0))
    res = client.embeddings.create(model=GEMINI, input=texts, dimensions=768,
                                   extra_headers={"x-sluice-request-id": rid})
    assert res.model == GEMINI
    assert [_f32(d.embedding) for d in res.data] == [vector_for(GEMINI, t, 3072, 768)
                                                    for t in texts]
    assert int(standin.stats()["by_path"].get(GEMINI_PATH, 0)) == before + 1
    tokens = sum(count_text(t) for t in texts)
    assert res.usage.prompt_tokens == tokens
    r = row(sessions, rid)
    assert (r.kind, r.provider, r.items, r.input_uncached) == ("embedding", "google", 3, tokens)
    assert r.cost == tokens * GEMINI_PRICE / 1_000_000 > 0
    # Gemini's answer has no token count: billed by ours, and the ledger says so.
    assert r.estimated_cost == r.cost
    with sessions() as s:
        billing = s.scalars(select(AttemptRow.billing)
                            .where(AttemptRow.request_id == rid)).all()
    assert billing == ["estimated"]


def test_gemini_items_past_its_per_call_limit_are_cut_into_calls(
        client: openai.OpenAI, standin: Any) -> None:
    texts = _texts(230)
    before = int(standin.stats()["by_path"].get(GEMINI_PATH, 0))
    res = client.embeddings.create(model=GEMINI, input=texts, dimensions=64)
    assert [_f32(d.embedding) for d in res.data] == [vector_for(GEMINI, t, 3072, 64)
                                                    for t in texts]
    assert int(standin.stats()["by_path"].get(GEMINI_PATH, 0)) == before + 3  # 100 per call


def test_auto_goes_to_each_features_model_and_never_serves_one_models_vector_for_another(
        client: openai.OpenAI, standin: Any) -> None:
    text = _texts(1)[0]
    # SLUICE_EMBEDDINGS__FEATURES (tests/conftest.py): emb-large and emb-gemini have their own.
    large = client.embeddings.create(model="auto", input=text,
                                     extra_headers={"x-sluice-feature": "emb-large"})
    assert large.model == "text-embedding-3-large"
    assert _f32(large.data[0].embedding) == vector_for("text-embedding-3-large", text, 3072)
    gem = client.embeddings.with_raw_response.create(
        model="auto", input=text, extra_headers={"x-sluice-feature": "emb-gemini"})
    assert gem.parse().model == GEMINI and gem.headers["x-sluice-cached-items"] == "0/1"
    assert _f32(gem.parse().data[0].embedding) == vector_for(GEMINI, text, 3072)
    default = client.embeddings.create(model="auto", input=text)
    assert default.model == MODEL
    assert _f32(default.data[0].embedding) == vector_for(MODEL, text, 1536)
    # In one feature's scope, the same text on another model is a miss, sent to that model.
    calls = _calls(standin)
    other = client.embeddings.with_raw_response.create(
        model="text-embedding-3-large", input=text,
        extra_headers={"x-sluice-feature": "emb-gemini"})
    assert other.headers["x-sluice-cached-items"] == "0/1" and _calls(standin) == calls + 1
    assert _f32(other.parse().data[0].embedding) == vector_for("text-embedding-3-large", text,
                                                               3072)
    again = client.embeddings.with_raw_response.create(
        model="auto", input=text, extra_headers={"x-sluice-feature": "emb-gemini"})
    assert again.headers["x-sluice-cached-items"] == "1/1"
    assert _f32(again.parse().data[0].embedding) == vector_for(GEMINI, text, 3072)


def test_spend_by_kind_and_the_item_cache_per_feature(client: openai.OpenAI, pg_url: str,
                                                      integration_env: dict[str, str],
                                                      sessions: Any) -> None:
    from sqlalchemy import func, select

    from models.db.tables import LedgerRow
    from tests.e2e.cli_support import sluice, sluice_json

    texts = _texts(4)
    feature = f"cli-{uuid.uuid4().hex[:6]}"
    ids = [_rid(), _rid()]
    for rid, batch in zip(ids, (texts[:2], texts)):  # the second finds two of its four cached
        client.embeddings.create(model=MODEL, input=batch,
                                 extra_headers={"x-sluice-feature": feature,
                                                "x-sluice-request-id": rid})
    # The answers come before their settle, and the cached part's row is written off the
    # answer's path: the CLI and the sums below read all three rows final.
    for rid in (*ids, f"{ids[1]}:cached"):
        assert wait_written(sessions, rid) is not None, rid
    env = {**integration_env, "SLUICE_DATABASE__URL": pg_url}
    out = sluice_json(["spend", "--by", "kind"], env)
    kinds = {line["kind"]: line for line in out["lines"]}
    with sessions() as s:
        want = s.execute(select(func.sum(LedgerRow.cost), func.count())
                         .where(LedgerRow.kind == "embedding")).one()
        parts = s.execute(select(func.count()).where(
            LedgerRow.kind == "embedding", LedgerRow.request_id.like("%:cached"))).scalar_one()
    assert Decimal(kinds["embedding"]["cost"]) == want[0]
    # A partly cached request's cached part is its own row, not another request.
    assert parts >= 1 and kinds["embedding"]["requests"] == want[1] - parts
    mine = [r for r in sluice_json(["spend", "--by", "feature"], env)["embedding_items"]
            if r["feature"] == feature]
    assert [(r["items"], r["cached"], r["hit_rate"]) for r in mine] == [(6, 2, 0.3333)]
    assert Decimal(mine[0]["saved"]) == sum(tokens_of(t) for t in texts[:2]) * PRICE / 1_000_000
    by_feature = sluice_json(["spend", "--by", "feature"], env)
    ours = [line for line in by_feature["lines"] if line["feature"] == feature]
    assert [line["requests"] for line in ours] == [2]  # two requests, three rows
    spent = sluice(["spend", "--by", "feature"], env)
    assert spent.returncode == 0 and "Embedding item cache by feature" in spent.stdout
    stats = sluice_json(["cache", "stats"], env)
    mine = [r for r in stats if r.get("kind") == "embedding" and r["feature"] == feature]
    assert len(mine) == 1
    assert (mine[0]["items"], mine[0]["cached"], mine[0]["hit_rate"]) == (6, 2, 0.3333)
    assert Decimal(mine[0]["saved"]) == sum(tokens_of(t) for t in texts[:2]) * PRICE / 1_000_000
    table = sluice(["cache", "stats"], env)
    assert table.returncode == 0 and "Embedding item cache by feature" in table.stdout
