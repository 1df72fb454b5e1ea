"""Embedding requests, vectors, cache keys, packing rules and catalogue entries (pure code)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.domain.catalogue import load_catalogue
from models.domain.embedding import (decode_vector, encode_vector, item_key,
                                     parse_embedding_request, shorten)
from models.domain.embedding_pack import chunks, split_tokens
from models.domain.errors import UnknownModelError, ValidationError

CAT = load_catalogue()


def _req(**kw: object) -> object:
    return parse_embedding_request({"team": "t", "feature": "f", **kw})


def test_input_shapes_as_openai_accepts_them() -> None:
    assert _req(input="a").inputs == ("a",)
    assert _req(input=["a", "b"]).inputs == ("a", "b")
    assert _req(input=[1, 2, 3]).inputs == ((1, 2, 3),)
    assert _req(input=[[1, 2], [3], "c"]).inputs == ((1, 2), (3,), "c")


@pytest.mark.parametrize(("value", "field"), [
    ("", "input"), ([], "input"), (["ok", ""], "input[1]"), ([["x"]], "input[0]"),
    ([[]], "input[0]"), ([True], "input[0]"), ([-1, 2], "input[0]"), (None, "input"),
    (["x"] * 2049, "input"),
])
def test_bad_input_names_the_item(value: object, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _req(input=value)
    assert exc.value.field == field


def test_other_fields_are_named() -> None:
    for kw, field in (({"dimensions": 0}, "dimensions"), ({"encoding_format": "int8"},
                                                          "encoding_format"),
                      ({"user": "a b"}, "user"), ({"lane": "bulk"}, "lane")):
        with pytest.raises(ValidationError) as exc:
            _req(input="x", **kw)
        assert exc.value.field == field
    with pytest.raises(ValidationError) as missing:
        parse_embedding_request({"team": "t", "feature": "f"})
    assert missing.value.field == "input"


@given(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=64))
def test_vectors_round_trip_as_float32_base64(values: list[float]) -> None:
    assert decode_vector(encode_vector(values)) == values


def test_shorten_keeps_the_head_at_unit_length() -> None:
    short = shorten([3.0, 4.0, 12.0], 2)
    assert short == pytest.approx([0.6, 0.8])


def test_item_keys_tell_apart_text_tokens_size_model_and_scope() -> None:
    base = item_key("s", "m", 8, "1")
    assert base == item_key("s", "m", 8, "1")
    others = {item_key("s", "m", 8, (1,)), item_key("s", "m", 4, "1"),
              item_key("s", "n", 8, "1"), item_key("t", "m", 8, "1"),
              item_key("s", "m", 8, "1 "), item_key("s", "m", 8, "One")}
    assert base not in others and len(others) == 6


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(1, 10), st.integers(1, 1000))
def test_chunks_cover_every_item_in_order_within_limits(tokens: list[int], max_items: int,
                                                         max_tokens: int) -> None:
    parts = chunks(tokens, max_items, max_tokens)
    assert [i for r in parts for i in r] == list(range(len(tokens)))
    for r in parts:
        assert 1 <= len(r) <= max_items
        # Over the token limit only as a single item the provider must judge.
        assert sum(tokens[i] for i in r) <= max_tokens or len(r) == 1


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=30), st.integers(0, 300_000))
def test_split_tokens_adds_up_to_the_bill_in_proportion(counts: list[int], billed: int) -> None:
    shares = split_tokens(billed, counts)
    assert sum(shares) == billed and all(s >= 0 for s in shares)
    total = sum(counts)
    if total:
        for c, s in zip(counts, shares):
            assert abs(s - billed * c / total) < 1
    assert split_tokens(sum(counts), counts) == counts  # the provider agrees: own counts


def test_embedding_models_are_priced_and_kept_out_of_chat_tiers() -> None:
    small = CAT.get("text-embedding-3-small")
    assert small.kind == "embedding" and small.price.input == Decimal("0.02")
    assert small.embedding is not None and small.embedding.dimensions == 1536
    assert all(m.kind == "chat" for t in ("cheap", "flagship", "self-hosted")
               for m in CAT.in_tier(t))
    local = CAT.get("all-minilm-l6-v2")
    # GPU-hour price over the pool's embedding throughput: $2.00 / 3600 s / 400k tok/s.
    assert local.price.input == (Decimal("2.00") / 3600 / 400_000 * 1_000_000).quantize(
        Decimal("1e-12"))


def test_a_chat_request_naming_an_embedding_model_is_refused() -> None:
    from models.domain.request import parse_request
    from models.domain.settings import RoutingSettings
    from scheduler.route import decide_route

    req = parse_request({"team": "t", "feature": "f", "model": "text-embedding-3-small",
                         "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(UnknownModelError) as exc:
        decide_route(req, CAT, RoutingSettings())
    assert exc.value.field == "model" and "/v1/embeddings" in exc.value.message


#: Texts where OpenAI's embedding tokenizer (cl100k_base) and its chat one (o200k_base) differ.
_DIFFERING = ["Привет мир, как дела?", "naïve café résumé", "東京タワーは高い"]


def test_openai_embedding_input_is_counted_with_cl100k_as_the_provider_bills_it() -> None:
    from models.domain.tokens import count_text, count_text_as
    from queues.embeddings import check_request
    from workers.providers.standin.embeddings_api import tokens_of

    for name in ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"):
        model = CAT.get(name)
        assert model.embedding is not None and model.embedding.tokenizer == "cl100k_base"
        _dims, counted = check_request(_req(input=_DIFFERING, model=name), model)  # type: ignore[arg-type]
        # The provider's count (the stand-in counts as api.openai.com: cl100k), not o200k's.
        assert counted == [tokens_of(t) for t in _DIFFERING]
        assert counted == [count_text_as(t, "cl100k_base") for t in _DIFFERING]
        assert all(c > count_text(t) for c, t in zip(counted, _DIFFERING))
    # The self-hosted word-piece model: its bytes bound; Gemini: o200k (its bill is estimated).
    assert CAT.get("all-minilm-l6-v2").embedding.tokenizer == "bytes"  # type: ignore[union-attr]
    assert CAT.get("gemini-embedding-001").embedding.tokenizer == "o200k_base"  # type: ignore[union-attr]


def test_an_unknown_embedding_tokenizer_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    from models.domain.errors import ConfigError

    path = Path(str(tmp_path)) / "prices.toml"
    path.write_text('version = "t"\ncurrency = "USD"\n[models.e]\nprovider = "openai"\n'
                    'kind = "embedding"\ninput = "0.02"\ndimensions = 8\n'
                    'tokenizer = "p50k_base"\n')
    with pytest.raises(ConfigError, match="tokenizer"):
        load_catalogue(path)
