"""The gpu_batching benchmark's Celery modes: real GPU worker processes, Redis and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.bench import gpu_stages

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LaneRun:
    """One Celery mode: per-request latencies plus the per-stage table from the worker."""

    mode: str
    wall_s: float
    latencies_s: list[float]
    output_tokens: int
    stages: dict[str, list[float]] = field(default_factory=dict)
    spread_ms: float = 0.0
    #: CPU ms per request of each party (gpu_profile.cpu_line) and the worker's profile.
    cpu: str = ""
    profile: list[str] = field(default_factory=list)


def lane_env(run_home: Path, model: Path, db_url: str, redis_url: str,
             args: Any) -> dict[str, str]:
    """SLUICE_* variables for the benchmark's workers and its producer (a private key prefix:
    the run never sees another run's messages)."""
    prefix = f"sggpu{uuid.uuid4().hex[:6]}:"
    return {"SLUICE_HOME": str(run_home), "SLUICE_BROKER__URL": redis_url,
            "SLUICE_BROKER__RESULT_BACKEND": redis_url, "SLUICE_BROKER__KEY_PREFIX": prefix,
            "SLUICE_CACHE__REDIS_URL": redis_url, "SLUICE_CACHE__KEY_PREFIX": prefix + "rc:",
            "SLUICE_DATABASE__URL": db_url, "SLUICE_GPU__MODEL_PATH": str(model),
            "SLUICE_GPU__MAX_NUM_SEQS": str(args.max_num_seqs),
            "SLUICE_GPU__LOAD_FORMAT": args.load_format,
            **({"SLUICE_DATABASE__POOL_SIZE": str(args.pool_size)} if args.pool_size else {}),
            **({"SLUICE_BENCH_PROFILE": "1"} if getattr(args, "profile", False) else {})}


@contextmanager
def gpu_worker(env: dict[str, str], stage_key: str, concurrency: int,
               ready_s: float = 900.0) -> Iterator[subprocess.Popen[bytes]]:
    """One real GPU worker process (``--pool threads``, both gpu queues, its own engine),
    with the stage timers of ops.bench.gpu_stages; ready (engine loaded) when this yields."""
    log = Path(tempfile.mkstemp(prefix="sluice-gpu-worker-", suffix=".log")[1])
    if env.get("SLUICE_BENCH_PROFILE"):  # --profile: the worker samples its own stacks
        env = {**env, "SLUICE_BENCH_PROFILE": str(log) + ".profile.json"}
    cmd = [sys.executable, "-m", "ops.bench.gpu_stages", stage_key, env["SLUICE_BROKER__URL"],
           "-A", "queues.celery_app", "worker", "-P", "threads", "-c", str(concurrency),
           "-Q", "interactive.gpu,async.gpu", "-n", f"gpu-{uuid.uuid4().hex[:6]}@%h",
           "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env,
                                                    "VLLM_LOGGING_LEVEL": "WARNING"},
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + ready_s
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("GPU worker failed to start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        proc.profile_path = env.get("SLUICE_BENCH_PROFILE")  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.unlink(missing_ok=True)
        if env.get("SLUICE_BENCH_PROFILE"):
            Path(env["SLUICE_BENCH_PROFILE"]).unlink(missing_ok=True)


class Lane:
    """The producer side: a Gateway on the benchmark's settings and the stage records."""

    def __init__(self, env: dict[str, str], stage_key: str, prompt: Callable[[int], str],
                 max_tokens: int, threads: int, worker: Any = None) -> None:
        from models.domain.settings import load_settings
        from queues.producer import connect

        self.settings = load_settings({**os.environ, **env})
        self.gateway = connect(self.settings)
        self.redis_url = env["SLUICE_BROKER__URL"]
        self.stage_key = stage_key
        self.prompt = prompt
        self.max_tokens = max_tokens
        # Long-lived caller threads, as a server's: Celery gives each thread its own result
        # store client (connection and subscription), made on the thread's first request.
        self.pool = ThreadPoolExecutor(threads)
        self.worker = worker  # the one GPU worker process, for CPU and profile (or None)

    def chat(self, i: int, lane: str) -> Any:
        from models.domain.request import ChatRequest

        return ChatRequest.model_validate({
            "team": "bench", "feature": "gpu-batching", "lane": lane, "model": "self-hosted",
            "messages": [{"role": "user", "content": self.prompt(i)}],
            "max_tokens": self.max_tokens, "cache": {"mode": "bypass"}, "timeout_s": 300})

    def one(self, i: int, lane: str, stamps: dict[str, tuple[float, float, float]]) -> int:
        """Submit one request, wait for it, note (sent, published, got) under its task id."""
        t0 = time.time()
        handle = self.gateway.submit(self.chat(i, lane))
        t1 = time.time()
        out = handle.result(timeout=300).usage.output
        stamps[handle.task_id] = (t0, t1, time.time())
        return int(out)

    def run(self, mode: str, n: int, lane: str, *, concurrent: bool = True,
            during: Callable[[], None] | None = None, extra: int = 0) -> LaneRun:
        """``n`` requests on ``lane`` from n threads (or one by one), with their stages;
        ``extra``: requests ``during`` waits for (their CPU is shared out per request too)."""
        from ops.bench import gpu_profile

        gpu_stages.read(self.redis_url, self.stage_key)  # drop records of earlier modes
        stamps: dict[str, tuple[float, float, float]] = {}
        pid = self.worker.pid if self.worker is not None else None
        profiled = bool(getattr(self.worker, "profile_path", None))
        if profiled:
            time.sleep(1.2)  # the worker's profile snapshot (written every second) catches up
        cpu0, prof0 = gpu_profile.cpu_snapshot(pid), self._profile()
        t0 = time.perf_counter()
        if concurrent:
            tokens = sum(self.pool.map(lambda i: self.one(i, lane, stamps), range(n)))
        else:
            tokens = sum(self.one(i, lane, stamps) for i in range(n))
        wall = time.perf_counter() - t0
        if during is not None:
            during()
        cpu = gpu_profile.cpu_line(cpu0, gpu_profile.cpu_snapshot(pid), n + extra)
        if profiled:
            time.sleep(1.2)
        prof = gpu_profile.summary(gpu_profile.diff(self._profile(), prof0)) if profiled else []
        records = [r for r in gpu_stages.read(self.redis_url, self.stage_key)
                   if r["task_id"] in stamps]
        return LaneRun(mode, wall, [s[2] - s[0] for s in stamps.values()], tokens,
                       gpu_stages.stage_table(records, stamps),
                       gpu_stages.engine_spread_ms(records), cpu, prof)

    def _profile(self) -> dict[str, Any]:
        from ops.bench import gpu_profile

        path = getattr(self.worker, "profile_path", None)
        return gpu_profile.read(path) if path else {}

    def backlog(self, n: int) -> Callable[[], None]:
        """Queue ``n`` async requests now; the returned function waits for all of them."""
        handles = [self.gateway.submit(self.chat(i, "async")) for i in range(n)]

        def wait() -> None:
            for h in handles:
                h.result(timeout=600)
        return wait

    def close(self) -> None:
        self.pool.shutdown()
        self.gateway.close()


def measure_lanes(env: dict[str, str], sizes: list[int], workers: int,
                  prompt: Callable[[int], str], args: Any, tag: str = ""
                  ) -> tuple[list[LaneRun], list[str]]:
    """Every Celery mode against ``workers`` GPU worker processes: serial, concurrent per lane
    and size, and interactive while an async backlog is queued; ``tag`` ends each mode name."""
    stage_key = f"{env['SLUICE_BROKER__KEY_PREFIX']}bench-stages"
    notes: list[str] = []
    with ExitStack() as stack:
        procs = [stack.enter_context(gpu_worker(env, stage_key, max(sizes) * 3 + 4))
                 for _ in range(workers)]
        lane = Lane(env, stage_key, prompt, args.max_tokens, max(sizes),
                    procs[0] if workers == 1 else None)
        stack.callback(lane.close)
        # warm-up: first-request costs (each caller thread's connections and result store
        # subscription, the worker's pools) are not batching
        lane.run("warm-up", max(sizes), "interactive")
        runs = [lane.run(f"serial celery{tag}", sizes[0], "interactive", concurrent=False)]
        for n in sizes:
            runs.append(lane.run(f"concurrent celery {n}, interactive lane{tag}", n,
                                 "interactive"))
            runs.append(lane.run(f"concurrent celery {n}, async lane{tag}", n, "async"))
        n = sizes[0]
        # Interactive alone and then behind twice as many async requests already queued.
        alone = lane.run(f"celery interactive {n}, alone{tag}", n, "interactive")
        wait = lane.backlog(2 * n)
        behind = lane.run(f"celery interactive {n}, behind {2 * n} async{tag}", n,
                          "interactive", during=wait, extra=2 * n)
        runs += [alone, behind]
        notes.append(f"{workers} GPU worker process(es){tag}, -c {max(sizes) * 3 + 4}, "
                     f"DB pool {env.get('SLUICE_DATABASE__POOL_SIZE', 'default')}")
    return runs, notes
