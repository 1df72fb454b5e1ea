"""Router decision cost: heuristic and learned routers beside floors measured in the same run.

    python -m ops.bench.router_bench [--n 3000] [--artifact PATH] [--no-embed] [--json]

Prompts are a seeded sample of the RouteLLM data (GSM8K, MMLU, MT-Bench) when it is there, else
synthetic chat prompts. Per prompt, interleaved: a dict lookup and a ``re.search`` on the same
prompt (the floors), the heuristic router, and the learned router on one prompt. Then the learned
router batched, and (unless --no-embed) the MiniLM embedding a learned embedding router needs.
Targets: heuristic p99 <= 0.1 ms; learned p99 <= 10 ms single and >= 500 prompts/s batched.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ops.bench.harness import pct
from scheduler.router.base import RouteInput
from scheduler.router.heuristic import HeuristicRouter

DEFAULT_ARTIFACT = Path("ops/router/artifacts/router-tfidf-lr.npz")
_WORD = re.compile(r"\b(?:design|prove|rephrase)\b", re.I)


def sample_prompts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` prompts from the RouteLLM data if present, else synthetic ones; and which."""
    rng = random.Random(seed)
    try:
        from ops.router.datasets import load_dataset

        prompts = [ex.prompt for ex in load_dataset()]
        return rng.sample(prompts, min(n, len(prompts))), "routellm"
    except Exception:  # any trouble with the data: fall back to synthetic prompts
        verbs = ["Rephrase", "Classify", "Summarize", "Design", "Prove", "Implement", "Analyze"]
        topics = ["our refund policy", "a lock-free queue", "the quarterly report",
                  "a distributed cache", "the onboarding email", "an integer identity"]
        return [f"{rng.choice(verbs)} {rng.choice(topics)}. " * rng.randint(1, 30)
                for _ in range(n)], "synthetic"


def _ns() -> int:
    return time.perf_counter_ns()


def measure(prompts: list[str], learned: Any | None) -> dict[str, list[float]]:
    """Per-prompt timings in microseconds, each kind interleaved on the same prompt."""
    heuristic = HeuristicRouter()
    table = {p: i for i, p in enumerate(prompts)}
    items = [RouteInput(p) for p in prompts]
    out: dict[str, list[float]] = {"dict": [], "re": [], "heuristic": [], "learned": []}
    for item in items[:200]:  # warm caches and lazily built regex state
        heuristic.score_input(item)
        if learned is not None:
            learned.score_input(item)
    gc.collect()
    for item in items:
        t0 = _ns()
        table[item.prompt]
        t1 = _ns()
        _WORD.search(item.prompt)
        t2 = _ns()
        heuristic.score_input(item)
        t3 = _ns()
        out["dict"].append((t1 - t0) / 1e3)
        out["re"].append((t2 - t1) / 1e3)
        out["heuristic"].append((t3 - t2) / 1e3)
        if learned is not None:
            t4 = _ns()
            learned.score_input(item)
            out["learned"].append((_ns() - t4) / 1e3)
    return out


def batched_rate(router: Any, prompts: list[str], batch: int = 256) -> float:
    """Prompts per second through ``score_inputs`` in batches."""
    items = [RouteInput(p) for p in prompts]
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        router.score_inputs(items[i:i + batch])
    return len(items) / (time.perf_counter() - start)


def embed_costs(prompts: list[str]) -> dict[str, float] | None:
    """MiniLM (128 tokens) per-prompt ms and batched prompts/s, or None if not installed."""
    try:
        from scheduler.router.embedder import Embedder

        emb = Embedder(max_tokens=128).load()
    except Exception:  # the embeddings extra is optional
        return None
    emb.embed(prompts[:8])
    single = []
    for p in prompts[:150]:
        t = time.perf_counter()
        emb.embed([p])
        single.append((time.perf_counter() - t) * 1e3)
    start = time.perf_counter()
    emb.embed(prompts[:512])
    rate = min(512, len(prompts)) / (time.perf_counter() - start)
    return {"p50_ms": pct(single, 50), "p99_ms": pct(single, 99), "batched_per_s": rate}


def load_learned(path: Path) -> Any | None:
    """The learned router of ``path``, or None when there is no artifact yet."""
    from scheduler.router.learned import load_router

    return load_router(path) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    prompts, source = sample_prompts(args.n)
    learned = load_learned(args.artifact)
    t = measure(prompts, learned)
    res: dict[str, Any] = {"prompts": len(prompts), "source": source,
                           "artifact": str(args.artifact) if learned else None}
    for key in t:
        if t[key]:
            res[key] = {"p50_us": pct(t[key], 50), "p99_us": pct(t[key], 99)}
    res["heuristic"]["batched_per_s"] = batched_rate(HeuristicRouter(), prompts)
    if learned is not None:
        res["learned"]["batched_per_s"] = batched_rate(learned, prompts)
        res["learned"]["version"] = learned.version
    if not args.no_embed:
        res["minilm_embed"] = embed_costs(prompts)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    _print(res)


def _print(res: dict[str, Any]) -> None:
    table = Table(title=f"Router decision cost ({res['prompts']} {res['source']} prompts, "
                        "one run, interleaved)", title_justify="left")
    for col in ("what", "p50", "p99", "batched", "p99 / re.search p99", "target"):
        table.add_column(col, justify="left" if col == "what" else "right")
    floor = res["re"]["p99_us"]
    table.add_row("floor: dict lookup", f"{res['dict']['p50_us']:.2f} µs",
                  f"{res['dict']['p99_us']:.2f} µs", "", "", "")
    table.add_row("floor: re.search on the prompt", f"{res['re']['p50_us']:.2f} µs",
                  f"{floor:.2f} µs", "", "1.0x", "")
    h = res["heuristic"]
    table.add_row("heuristic router", f"{h['p50_us']:.1f} µs", f"{h['p99_us']:.1f} µs",
                  f"{h['batched_per_s']:,.0f}/s", f"{h['p99_us'] / floor:.1f}x", "p99 ≤ 100 µs")
    if "learned" in res:
        lr = res["learned"]
        table.add_row(f"learned {lr['version']}", f"{lr['p50_us'] / 1e3:.3f} ms",
                      f"{lr['p99_us'] / 1e3:.3f} ms", f"{lr['batched_per_s']:,.0f}/s",
                      f"{lr['p99_us'] / floor:.0f}x", "p99 ≤ 10 ms, ≥ 500/s")
    emb = res.get("minilm_embed")
    if emb:
        table.add_row("MiniLM embedding alone (128 tok)", f"{emb['p50_ms']:.1f} ms",
                      f"{emb['p99_ms']:.1f} ms", f"{emb['batched_per_s']:,.0f}/s",
                      f"{emb['p99_ms'] * 1e3 / floor:.0f}x", "(embed-* kinds)")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
