"""Router decision cost: heuristic and learned routers beside floors measured in the same run.

    python -m ops.bench.router_bench [--n 3000] [--artifact PATH] [--no-embed] [--json]

Prompts are a seeded sample of the RouteLLM data (GSM8K, MMLU, MT-Bench) when it is there, else
synthetic chat prompts. Per prompt, interleaved, ``--repeats`` times each: a dict lookup and a
``re.search`` on the same prompt (the floors), the heuristic router, and the learned router on
one prompt. Then the learned
router batched, and (unless --no-embed) the MiniLM embedding a learned embedding router needs.
Targets: heuristic p99 <= 0.1 ms; learned p99 <= 10 ms single and >= 500 prompts/s batched.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
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


def _clocks() -> tuple[int, int]:
    # Wall time and this thread's CPU time: on a shared machine the wall-clock tail is mostly
    # time spent preempted, which the CPU clock leaves out.
    return time.perf_counter_ns(), time.thread_time_ns()


def measure(prompts: list[str], learned: Any | None,
            repeats: int = 5) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU microseconds per call, each kind interleaved on the same prompt.

    ``wall``/``cpu`` hold every single call (``repeats`` per prompt); ``typical`` holds each
    prompt's median CPU time, whose p99 is the cost of the costliest prompts without the
    one-off stalls (cold caches after a preemption) that a shared machine adds.
    """
    heuristic = HeuristicRouter()
    table = {p: i for i, p in enumerate(prompts)}
    items = [RouteInput(p) for p in prompts]
    kinds: dict[str, Any] = {"dict": lambda it: table[it.prompt],
                             "re": lambda it: _WORD.search(it.prompt),
                             "heuristic": heuristic.score_input}
    if learned is not None:
        kinds["learned"] = learned.score_input
    for item in items[:200]:  # warm caches and lazily built state
        for fn in kinds.values():
            fn(item)
    out: dict[str, dict[str, list[float]]] = {
        k: {"wall": [], "cpu": [], "typical": []} for k in kinds}
    gc.collect()
    for item in items:
        for name, fn in kinds.items():
            cpu = []
            for _ in range(repeats):
                w0, c0 = _clocks()
                fn(item)
                w1, c1 = _clocks()
                out[name]["wall"].append((w1 - w0) / 1e3)
                cpu.append((c1 - c0) / 1e3)
            out[name]["cpu"].extend(cpu)
            out[name]["typical"].append(statistics.median(cpu))
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
    parser.add_argument("--repeats", type=int, default=5, help="calls per prompt and kind")
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    prompts, source = sample_prompts(args.n)
    learned = load_learned(args.artifact)
    t = measure(prompts, learned, args.repeats)
    res: dict[str, Any] = {"prompts": len(prompts), "source": source,
                           "artifact": str(args.artifact) if learned else None}
    for key, clocks in t.items():
        res[key] = {"p50_us": pct(clocks["wall"], 50), "p99_us": pct(clocks["wall"], 99),
                    "cpu_p50_us": pct(clocks["cpu"], 50), "cpu_p99_us": pct(clocks["cpu"], 99),
                    "typical_p99_us": pct(clocks["typical"], 99)}
    res["load_avg_1m"] = os.getloadavg()[0]
    res["cpus"] = os.cpu_count()
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
    table = Table(title=f"Router decision cost: {res['prompts']} {res['source']} prompts, one run, "
                        f"interleaved; load average {res['load_avg_1m']:.1f} on {res['cpus']} CPUs",
                  title_justify="left")
    for col in ("what", "p50", "p99", "CPU p99", "p99 over prompts", "batched",
                "CPU p99 / floor", "target"):
        table.add_column(col, justify="left" if col == "what" else "right")
    floor = res["re"]["cpu_p99_us"]

    def us(v: float) -> str:
        return f"{v:.1f} µs" if v < 1000 else f"{v / 1e3:.2f} ms"

    rows = [("floor: dict lookup", "dict", "", ""),
            ("floor: re.search on the prompt", "re", "", ""),
            ("heuristic router", "heuristic", "heuristic", "p99 ≤ 100 µs")]
    if "learned" in res:
        rows.append((f"learned {res['learned']['version']}", "learned", "learned",
                     "p99 ≤ 10 ms, ≥ 500/s"))
    for label, key, batched, target in rows:
        r = res[key]
        rate = f"{r['batched_per_s']:,.0f}/s" if batched else ""
        table.add_row(label, us(r["p50_us"]), us(r["p99_us"]), us(r["cpu_p99_us"]),
                      us(r["typical_p99_us"]), rate, f"{r['cpu_p99_us'] / floor:.1f}x", target)
    emb = res.get("minilm_embed")
    if emb:
        table.add_row("MiniLM embedding alone (128 tok)", f"{emb['p50_ms']:.1f} ms",
                      f"{emb['p99_ms']:.1f} ms", "", "", f"{emb['batched_per_s']:,.0f}/s", "",
                      "(embed-* kinds)")
    Console(width=160).print(table)
    print("p50/p99: wall clock per call; CPU p99: this thread's CPU time per call; p99 over "
          "prompts: p99 of each prompt's median CPU time over the repeats.")


if __name__ == "__main__":
    main()
