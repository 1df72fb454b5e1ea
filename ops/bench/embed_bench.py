"""Embedding benchmark: a retrieval-shaped trace through the pipeline against the same trace sent
as is, and the per-item cache hit path against a Redis GET of the same value.

``python -m ops.bench.embed_bench`` (PostgreSQL and Redis on 127.0.0.1; about a minute). The
trace: 10,000 chunk embeddings in documents of 1-30 chunks, 40 % of them repeats of earlier
chunks (re-ingested pages, shared boilerplate), on the async lane; then 1,000 one-line queries,
30 % repeated, on the interactive lane. "As is" sends every request straight to the provider
(the stand-in) through the openai SDK: one call per request, every token paid.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.tokens import count_text_as
from models.domain.usage import Usage
from ops.bench.harness import (bench_env, scratch_database, standin_process, summary,
                               worker_process)

MODEL = "text-embedding-3-small"


@functools.cache
def _tokenizer() -> str:
    limits = load_catalogue().get(MODEL).embedding
    return limits.tokenizer if limits else "o200k_base"


def _count(text: str) -> int:
    """Tokens of ``text`` as the model's provider bills them (its catalogue tokenizer)."""
    return count_text_as(text, _tokenizer())


def trace(chunks: int = 10_000, repeat: float = 0.4, queries: int = 1_000,
          seed: int = 7) -> tuple[list[list[str]], list[str]]:
    """Documents (lists of chunk texts) and queries, deterministic for ``seed``."""
    rnd = random.Random(seed)
    words = ("return refund shipping lamp linen shade oak table warranty invoice parcel "
             "courier size colour fabric delivery Norway Berlin stock order account").split()
    fresh: list[str] = []
    docs: list[list[str]] = []
    made = 0
    while made < chunks:
        doc = []
        for _ in range(min(rnd.randint(1, 30), chunks - made)):
            if fresh and rnd.random() < repeat:
                doc.append(rnd.choice(fresh))
            else:
                text = f"{len(fresh)}: " + " ".join(rnd.choice(words) for _ in range(40))
                fresh.append(text)
                doc.append(text)
            made += 1
        docs.append(doc)
    asked: list[str] = []
    for _ in range(queries):
        if asked and rnd.random() < 0.3:
            asked.append(rnd.choice(asked))
        else:
            asked.append("how do I " + " ".join(rnd.choice(words) for _ in range(8)) + "?")
    return docs, asked


def _calls(url: str) -> int:
    stats = httpx.get(f"{url}/_standin/stats", timeout=10).json()
    return int(stats["by_path"].get("/v1/embeddings", 0))


def as_is(url: str, docs: list[list[str]], queries: list[str], threads: int) -> dict[str, Any]:
    """Every request straight to the provider: calls, tokens, dollars, wall time."""
    import openai

    client = openai.OpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0)
    price = load_catalogue().get(MODEL)
    before = _calls(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        tokens = sum(pool.map(lambda inp: client.embeddings.create(
            model=MODEL, input=inp).usage.prompt_tokens, [*docs, *queries]))
    return {"calls": _calls(url) - before, "tokens": tokens,
            "cost": cost_of(Usage(input_uncached=tokens), price),
            "wall_s": time.perf_counter() - started}


def pipeline(gateway: Any, url: str, db_url: str, docs: list[list[str]], queries: list[str],
             threads: int) -> dict[str, Any]:
    """The same trace through Gateway.embed: chunks on the async lane, queries interactive."""
    from sqlalchemy import create_engine, text

    before = _calls(url)
    started = time.perf_counter()

    def ingest(doc: list[str]) -> int:
        return gateway.embed({"team": "bench", "feature": "kb-ingest", "lane": "async",
                              "model": MODEL, "input": doc}, timeout=120).items

    def ask(q: str) -> int:
        return gateway.embed({"team": "bench", "feature": "kb-query", "model": MODEL,
                              "input": q}, timeout=60).items

    with ThreadPoolExecutor(threads) as pool:
        items = sum(pool.map(ingest, docs)) + sum(pool.map(ask, queries))
    wall = time.perf_counter() - started
    gateway.flush()
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        cost, tokens, rows = conn.execute(text(
            "SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(CASE WHEN outcome = 'ok' THEN "
            "input_uncached ELSE 0 END), 0), COUNT(*) FROM ledger WHERE kind = 'embedding'"
        )).one()
    engine.dispose()
    return {"calls": _calls(url) - before, "tokens": int(tokens), "cost": Decimal(cost),
            "items": items, "ledger_rows": int(rows), "wall_s": wall}


def hit_path(gateway: Any, redis_url: str, n: int) -> dict[str, Any]:
    """p50/p99 of a one-item request answered from the item cache, beside a Redis GET of the
    same stored value, interleaved in the same loop."""
    import redis

    from queues.embeddings import item_cache

    text = "a query every user asks"
    req = {"team": "bench", "feature": "kb-query", "model": MODEL, "input": text}
    gateway.embed(req, timeout=60)  # fill it
    cache = item_cache(gateway)
    assert cache is not None
    key = cache.keys(gateway.submit_embedding(req).request, MODEL, 1536, [text])[0]
    client = redis.Redis.from_url(redis_url)
    assert client.get(key) is not None
    hits, gets = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        result = gateway.submit_embedding(req).result(timeout=10)
        hits.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        client.get(key)
        gets.append((time.perf_counter() - t0) * 1000)
        assert result.cached_items == 1
    client.close()
    return {"hit": summary(hits), "redis_get": summary(gets)}


def main(argv: list[str] | None = None) -> None:
    """Run the trace both ways and print calls, cost and latency ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--hits", type=int, default=2_000)
    ap.add_argument("--batch-timeout-ms", type=float, default=100.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    docs, queries = trace(args.chunks, queries=args.queries)
    from models.domain.settings import load_settings
    from queues.app import create_app
    from queues.http.waiter import prepare_app
    from queues.producer import connect

    with scratch_database() as db_url, standin_process() as url:
        env = bench_env(db_url, url)
        env["SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS"] = str(args.batch_timeout_ms)
        with worker_process(env, concurrency=args.threads):
            plain = as_is(url, docs, queries, args.threads)
            settings = load_settings(env)
            # One result backend shared safely by the sending threads, as the front door
            # does (queues/http/waiter.prepare_app): otherwise pushes are missed and each
            # waiter falls back to its 1 s read of the stored result.
            gateway = connect(settings, app=prepare_app(create_app(settings)))
            gateway.embed({"team": "bench", "feature": "warm-up", "model": MODEL,
                           "input": "warm"}, timeout=120)
            try:
                ours = pipeline(gateway, url, db_url, docs, queries, args.threads)
                lat = hit_path(gateway, env["SLUICE_CACHE__REDIS_URL"], args.hits)
            finally:
                gateway.close()
    out = {"trace": {"documents": len(docs), "chunks": sum(map(len, docs)),
                     "queries": len(queries),
                     "tokens": sum(_count(c) for d in docs for c in d)
                     + sum(_count(q) for q in queries)},
           "as_is": {k: str(v) if isinstance(v, Decimal) else v for k, v in plain.items()},
           "pipeline": {k: str(v) if isinstance(v, Decimal) else v for k, v in ours.items()},
           "ratios": {"provider_calls": round(ours["calls"] / plain["calls"], 4),
                      "cost": round(float(ours["cost"] / plain["cost"]), 4),
                      "hit_p99_vs_redis_get_p99": round(lat["hit"]["p99"]
                                                        / lat["redis_get"]["p99"], 2)},
           "hit_path_ms": lat}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    t, r = out["trace"], out["ratios"]
    print(f"trace: {t['documents']} documents, {t['chunks']} chunks, {t['queries']} queries, "
          f"{t['tokens']} tokens")
    print(f"provider calls: pipeline {ours['calls']} vs as is {plain['calls']} "
          f"(x{r['provider_calls']})")
    print(f"cost: pipeline ${ours['cost']:.6f} vs as is ${plain['cost']:.6f} (x{r['cost']}); "
          f"ledger rows {ours['ledger_rows']}")
    print(f"wall: pipeline {ours['wall_s']:.1f} s vs as is {plain['wall_s']:.1f} s")
    h, g = lat["hit"], lat["redis_get"]
    print(f"item-cache hit path p50 {h['p50']:.3f} ms p99 {h['p99']:.3f} ms; Redis GET p50 "
          f"{g['p50']:.3f} ms p99 {g['p99']:.3f} ms (hit p99 = x{r['hit_p99_vs_redis_get_p99']} "
          "a GET)")


if __name__ == "__main__":
    main()
