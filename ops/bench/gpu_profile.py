"""Where a GPU worker's CPU goes: per-thread CPU seconds and a stack sampler, in the worker.

py-spy is not always installed; this samples ``sys._current_frames()`` from a thread of the
worker itself (``SLUICE_BENCH_PROFILE=PATH`` under ``ops.bench.gpu_stages``) and rewrites
``PATH`` (JSON) every second: CPU seconds per thread group (``time.pthread_getcpuclockid``,
exact) and, per group, how often each function was on the stack of a thread that was running
Python (a leaf in a blocking call is waiting, not counted). The benchmark diffs two snapshots.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

#: Leaf functions that block with the GIL released: a thread whose stack ends here waits.
_WAITING = {"wait", "_wait_for_tstate_lock", "select", "poll", "_read_from_socket", "recv",
            "recv_into", "readinto", "wait_c", "wait_conn", "_worker", "accept"}
#: Our own modules' names, the libraries we want named in the table.
_KEEP = ("workers/", "models/", "queues/", "celery/", "kombu/", "redis/", "psycopg/",
         "sqlalchemy/", "vllm/", "pydantic", "json/", "billiard/", "concurrent/", "asyncio/")


def group(name: str) -> str:
    """A thread's group: pool threads, the consumer (MainThread), vLLM's loop, ..."""
    if name.startswith("ThreadPoolExecutor"):
        return "task threads"
    if name == "MainThread":
        return "consumer (MainThread)"
    return name.rstrip("0123456789-_") or name


def _where(code: Any) -> str:
    path = code.co_filename.replace("\\", "/")
    for keep in _KEEP:
        at = path.rfind(keep)
        if at >= 0:
            return f"{path[at:].removesuffix('.py')}:{code.co_name}"
    return f"{os.path.basename(path).removesuffix('.py')}:{code.co_name}"


class Sampler:
    """Samples every thread's stack ``hz`` times a second; snapshots per-thread CPU."""

    def __init__(self, path: str, hz: float = 200.0) -> None:
        self.path = path
        self.period = 1.0 / hz
        self.samples: dict[str, Counter[str]] = {}
        self.leaves: dict[str, Counter[str]] = {}
        self.running: Counter[str] = Counter()
        self.cpu: dict[int, tuple[str, float]] = {}

    def start(self) -> None:
        threading.Thread(target=self._loop, name="sluice-bench-sampler", daemon=True).start()

    def _loop(self) -> None:
        me = threading.get_ident()
        last_dump = time.monotonic()
        while True:
            time.sleep(self.period)
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                if frame.f_code.co_name in _WAITING:
                    continue
                g = group(names.get(ident, "?"))
                self.running[g] += 1
                seen = set()
                leaf = _where(frame.f_code)
                f: Any = frame
                while f is not None:
                    seen.add(_where(f.f_code))
                    f = f.f_back
                self.samples.setdefault(g, Counter()).update(seen)
                self.leaves.setdefault(g, Counter())[leaf] += 1
            if time.monotonic() - last_dump >= 1.0:
                last_dump = time.monotonic()
                self.dump()

    def dump(self) -> None:
        for t in threading.enumerate():
            try:
                clock = time.pthread_getcpuclockid(t.ident)  # type: ignore[arg-type]
                self.cpu[t.ident] = (group(t.name), time.clock_gettime(clock))  # type: ignore[index]
            except (OSError, TypeError):
                continue
        cpu: Counter[str] = Counter()
        for g, seconds in self.cpu.values():
            cpu[g] += seconds
        snap = {"cpu": dict(cpu), "running": dict(self.running),
                "samples": {g: dict(c.most_common(400)) for g, c in self.samples.items()},
                "leaves": {g: dict(c.most_common(60)) for g, c in self.leaves.items()},
                "process_cpu": sum(os.times()[:2])}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(snap, fh)
        os.replace(tmp, self.path)


def install(path: str) -> None:
    """Start the sampler (the GPU worker under the benchmark)."""
    Sampler(path).start()


def read(path: str) -> dict[str, Any]:
    """The newest snapshot (an empty one when none was written yet)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def diff(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """What happened between two snapshots."""
    def sub(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
        return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0) > 0}

    return {"cpu": sub(after.get("cpu", {}), before.get("cpu", {})),
            "running": sub(after.get("running", {}), before.get("running", {})),
            "samples": {g: sub(c, before.get("samples", {}).get(g, {}))
                        for g, c in after.get("samples", {}).items()},
            "leaves": {g: sub(c, before.get("leaves", {}).get(g, {}))
                       for g, c in after.get("leaves", {}).items()}}


#: What the inclusive table names: our code and the libraries' entry points, not plumbing.
_OURS = ("workers/", "models/", "queues/", "celery/app/trace:trace_task", "celery/backends",
         "celery/worker/request", "celery/worker/strategy", "celery/worker/consumer",
         "kombu/transport/redis", "kombu/messaging", "vllm/v1/engine/async_llm",
         "vllm/v1/engine/output_processor", "vllm/v1/engine/core_client", "psycopg/",
         "sqlalchemy/engine/base:_execute_context", "redis/client:execute_command",
         "pydantic")


def summary(d: Mapping[str, Any], top: int = 30) -> list[str]:
    """Lines: CPU seconds per thread group, then each busy group's hottest functions."""
    lines = ["worker CPU s by thread: " + ", ".join(
        f"{g} {s:.2f}" for g, s in sorted(d["cpu"].items(), key=lambda x: -x[1]) if s >= 0.01)]
    for g, n in sorted(d["running"].items(), key=lambda x: -x[1]):
        if n < 20:
            continue
        hot = sorted(d["samples"].get(g, {}).items(), key=lambda x: -x[1])
        hot = [(k, v) for k, v in hot if k.startswith(_OURS)][:top]
        lines.append(f"  {g}: {n:.0f} running samples; inclusive: " + ", ".join(
            f"{k} {100 * v / n:.0f}%" for k, v in hot))
        leaves = sorted(d["leaves"].get(g, {}).items(), key=lambda x: -x[1])[:8]
        lines.append(f"  {g} leaves: " + ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in leaves))
    return lines


def _tree_cpu(proc: Any, *, with_root: bool = True) -> float:
    import psutil

    total = 0.0
    for p in ([proc] if with_root else []) + proc.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_snapshot(worker_pid: int | None = None) -> dict[str, float]:
    """CPU seconds so far of each party on the machine: this process (the producer, or the
    in-process engine's host), its engine children, the GPU worker and its engine core, Redis,
    and every PostgreSQL process (backends, WAL writer)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    out = {"producer": t.user + t.system}
    out["producer children"] = _tree_cpu(me, with_root=False) - (
        _tree_cpu(psutil.Process(worker_pid)) if worker_pid else 0.0)
    if worker_pid:
        worker = psutil.Process(worker_pid)
        w = worker.cpu_times()
        out["worker"] = w.user + w.system
        out["worker sys"] = w.system
        out["worker engine core"] = _tree_cpu(worker, with_root=False)
    out["redis"] = out["postgres"] = 0.0
    for p in psutil.process_iter(["name"]):
        name = p.info["name"] or ""
        key = "redis" if name.startswith("redis-server") else (
            "postgres" if name.startswith(("postgres", "postmaster")) else "")
        if key:
            try:
                c = p.cpu_times()
                out[key] += c.user + c.system
            except psutil.NoSuchProcess:
                continue
    out["machine"] = sum(psutil.cpu_times()[:3])  # user, nice, system: every process
    return out


def cpu_line(before: Mapping[str, float], after: Mapping[str, float], n: int) -> str:
    """CPU milliseconds per request of each party between two snapshots."""
    parts = [f"{k} {1000 * (after[k] - before.get(k, 0)) / n:.1f}" for k in after
             if k != "machine" and after[k] - before.get(k, 0) > 0.0005]
    machine = 1000 * (after["machine"] - before["machine"]) / n
    return ", ".join(parts) + f"; machine {machine:.1f} ms/request"
