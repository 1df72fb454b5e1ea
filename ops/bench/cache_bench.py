"""Response-cache benchmark: the hit path through ``complete()`` beside a raw Redis GET, same run.

    python -m ops.bench.cache_bench [--n 2000] [--trace 3000] [--json]

Uses the running Redis and PostgreSQL (SLUICE_TEST_REDIS_URL / SLUICE_TEST_PG_URL), a fresh
ledger database, the stand-in and one real worker (which answers the first request and fills the
cache). Then, interleaved per iteration: ``complete()`` of an equivalent request (a hit, with its
ledger row), the same without the ledger sink, and a raw GET of the same value. Also the cost of
normalization plus hashing per request, and the hit rate of a replayed FAQ trace with
normalization off and on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
import unicodedata
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from ops.bench.harness import bench_env, scratch_database, standin_process, summary, worker_process

FAQ = ["How do I reset my password?", "What are your opening hours?", "Do you ship to Zürich?",
       "How long does delivery take?", "Can I return an item after 30 days?",
       "How do I cancel my subscription?", "Where can I download my invoice?",
       "Do you offer student discounts?", "How do I change my delivery address?",
       "Is my payment information stored securely?", "Can I pay with PayPal?",
       "How do I contact customer support?", "What is your warranty policy?",
       "Do you have a café in the store?", "How do I update my email address?",
       "Can I change my order after placing it?", "Why was my card declined?",
       "How do I redeem a gift card?", "Do you price match?", "How do I delete my account?"]


def faq_trace(n: int, seed: int = 11) -> list[str]:
    """``n`` FAQ questions, popular ones more often, as apps send them: case and spacing drift,
    accents composed or not, and volatile metadata (timestamps, request ids, session UUIDs)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(FAQ))]  # Zipf-like popularity
    out = []
    for _ in range(n):
        q = rng.choices(FAQ, weights)[0]
        if rng.random() < 0.3:
            q = q.lower()
        if rng.random() < 0.3:
            q = rng.choice(["  ", "", " "]) + q.replace(" ", rng.choice([" ", "  "]), 2) + \
                rng.choice(["\n", " ", ""])
        if rng.random() < 0.3:
            q = unicodedata.normalize("NFD", q)
        if rng.random() < 0.4:
            ts = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T" \
                 f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
            q += f"\n(sent {ts})"
        if rng.random() < 0.3:
            q += f" [req-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}]"
        if rng.random() < 0.2:
            q += f" session {uuid.UUID(int=rng.getrandbits(128))}"
        out.append(q)
    return out


FAQ_POLICY = {"lowercase": True, "patterns": ["iso_timestamp", "request_id", "uuid"]}


def trace_hit_rates(trace: list[str]) -> dict[str, float]:
    """Hit rate of ``trace`` replayed through the cache: raw text, default policy, FAQ policy."""
    from models.domain.request import parse_request
    from models.domain.result import ChatResult, Route
    from models.domain.settings import load_settings
    from queues.memory_cache import MemoryResponseCache, MemoryState

    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    answer = ChatResult(request_id="x", text="answer", provider="openai", model="gpt-4o-mini",
                        route=route)
    seen: set[str] = set()
    raw_hits = 0
    for q in trace:  # no normalization at all: the exact bytes
        digest = hashlib.sha256(q.encode()).hexdigest()
        raw_hits += digest in seen
        seen.add(digest)
    rates = {"off (exact text)": raw_hits / len(trace)}
    for label, features in (("default (NFC, whitespace)", {}),
                            ("faq policy (+ lowercase, patterns)", {"faq": FAQ_POLICY})):
        cache = MemoryResponseCache(load_settings({}, cache={"features": features,
                                                             "single_flight_wait_s": 0}),
                                    state=MemoryState())
        hits = 0
        for q in trace:
            request = parse_request({"team": "help", "feature": "faq",
                                     "messages": [{"role": "user", "content": q}]})
            if cache.lookup(request) is not None:
                hits += 1
            else:
                cache.store(request, answer)
        rates[label] = hits / len(trace)
    rates["ceiling (distinct questions)"] = 1 - len(FAQ) / len(trace)
    return rates


def key_cost_us(trace: list[str], repeat: int = 3) -> dict[str, float]:
    """Microseconds of normalization plus hashing per request, by policy."""
    from models.domain.request import parse_request
    from models.domain.settings import load_settings
    from queues.memory_cache import MemoryResponseCache, MemoryState

    short = "You answer customer questions for an online store, briefly."
    # A long static prefix, re-sent (as a new string) with every request, as apps do.
    long = " ".join(f"Policy {i}: answer politely, cite the help centre, never guess."
                    for i in range(128))
    out = {}
    for label, features, system in (("default policy", {}, short),
                                    ("faq policy", {"faq": FAQ_POLICY}, short),
                                    (f"faq policy, {len(long) // 1024} KB system prompt",
                                     {"faq": FAQ_POLICY}, long)):
        requests = [parse_request({"team": "help", "feature": "faq", "static": {
            "system": "".join(list(system))}, "messages": [{"role": "user", "content": q}]})
            for q in trace]
        cache = MemoryResponseCache(load_settings({}, cache={"features": features}),
                                    state=MemoryState())
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for r in requests:
                cache.key(r)
            best = min(best, (time.perf_counter() - t0) / len(requests) * 1e6)
        out[label] = best
    return out


def hit_path(n: int, warmup: int = 200) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of a hit through complete(), with and without its ledger row, and raw GET."""
    import redis

    from models.domain.settings import load_settings
    from queues.producer import connect
    from queues.response_cache import RedisResponseCache

    with scratch_database() as db, standin_process() as standin:
        env = bench_env(db, standin)
        settings = load_settings(env)
        with worker_process(env):
            gateway = connect(settings)
            bare = connect(settings, cache_hit_sink=None)
            body: dict[str, Any] = {"team": "bench", "feature": "faq", "model": "cheap",
                                    "max_tokens": 64}
            first = gateway.complete({**body, "messages": [
                {"role": "user", "content": "How do I reset my password?"}]}, timeout=30)
            assert not first.cache_hit
            again = {**body, "messages": [{"role": "user", "content": "How do I reset my  "
                                           "password?\n"}]}
            cache = gateway.cache
            assert isinstance(cache, RedisResponseCache) and settings.cache.redis_url
            entry = cache.entry_key(cache.key(bare_request(again)))
            raw = redis.Redis.from_url(settings.cache.redis_url)
            value = raw.get(entry)
            assert value is not None, "the worker did not fill the cache"
            samples: dict[str, list[float]] = {"complete() hit + ledger row": [],
                                               "complete() hit, no ledger sink": [],
                                               "raw Redis GET": []}
            misses = 0
            for i in range(warmup + n):
                t0 = time.perf_counter()
                a = gateway.complete({**again, "request_id": uuid.uuid4().hex}).cache_hit
                t1 = time.perf_counter()
                b = bare.complete({**again, "request_id": uuid.uuid4().hex}).cache_hit
                t2 = time.perf_counter()
                # A miss refills the entry (new request id inside): same key, same size class.
                assert raw.get(entry) is not None
                t3 = time.perf_counter()
                if i >= warmup:
                    # A miss (the cache failed open on a timeout) took the queue: not a hit sample.
                    misses += (not a) + (not b)
                    for name, dt, hit in zip(samples, (t1 - t0, t2 - t1, t3 - t2), (a, b, True),
                                              strict=True):
                        if hit:
                            samples[name].append(dt * 1000)
            cache.flush(team="bench")
            gateway.close()
            bare.close()
            raw.close()
    out = {name: summary(s) for name, s in samples.items()}
    out["value"] = {"bytes": float(len(value)), "misses": float(misses)}
    return out


def bare_request(data: dict[str, Any]) -> Any:
    from models.domain.request import parse_request

    return parse_request(data)


def main() -> None:
    """Run every measurement and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Hits measured per path.")
    parser.add_argument("--trace", type=int, default=3000, help="Requests in the FAQ trace.")
    parser.add_argument("--json", action="store_true", help="Machine-readable output.")
    args = parser.parse_args()
    trace = faq_trace(args.trace)
    report: dict[str, Any] = {"hit_path_ms": hit_path(args.n), "key_cost_us": key_cost_us(trace),
              "faq_trace_hit_rate": trace_hit_rates(trace)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    console = Console(width=120)
    paths = report["hit_path_ms"]
    raw = paths["raw Redis GET"]
    table = Table(title=f"Hit path, {args.n} each, interleaved (value "
                        f"{int(paths['value']['bytes'])} bytes, {int(paths['value']['misses'])} "
                        "failed-open misses left out)", title_justify="left")
    for col in ("path", "p50 ms", "p99 ms", "p50 / GET", "p99 / GET"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, s in paths.items():
        if name == "value":
            continue
        table.add_row(name, f"{s['p50']:.3f}", f"{s['p99']:.3f}", f"{s['p50'] / raw['p50']:.1f}x",
                      f"{s['p99'] / raw['p99']:.1f}x")
    console.print(table)
    console.print("normalization + hashing per request: " + ", ".join(
        f"{k} {v:.1f} µs" for k, v in report["key_cost_us"].items()))
    console.print(f"FAQ trace, {args.trace} requests, hit rate: " + ", ".join(
        f"{k} {v:.1%}" for k, v in report["faq_trace_hit_rate"].items()))


if __name__ == "__main__":
    main()
