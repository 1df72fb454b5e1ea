"""Per-stage timings of GPU-lane tasks: stamps taken in the worker, summed up in the benchmark.

``python -m ops.bench.gpu_stages KEY celery-args...`` runs the real ``celery worker`` with
timers around the stages of a task (claim, budget check, attempt row, engine, stash, finish)
and pushes one JSON record per task to the Redis list ``KEY``. Timers wrap the service's
functions from outside (nothing in the worker's code changes); a record costs one RPUSH.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_local = threading.local()
#: Stages a task goes through in the order they happen (name, module, attribute).
_TIMED = (("claim", "workers.runtime", "WorkerRuntime.claim"),
          ("check", "workers.service", "_second_check"),
          ("attempt", "workers.runtime", "WorkerRuntime.begin_attempt"),
          ("engine", "workers.providers.vllm_engine", "VllmEngineProvider.complete"),
          ("stash", "workers.service", "keep"),
          ("finish", "workers.service", "_bill"))


def _timer(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            record = getattr(_local, "record", None)
            if record is not None:
                record[stage] = [t0, time.time()]
    return timed


def install(redis_url: str, key: str) -> None:
    """Wrap each stage and push one record per task (at task_postrun) to ``key``."""
    import importlib

    import redis
    from celery import signals

    for stage, module, attr in _TIMED:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _timer(stage, getattr(owner, name)))
    client = redis.Redis.from_url(redis_url)
    received: dict[str, float] = {}

    def on_received(request: Any = None, **_: Any) -> None:
        received[request.id] = time.time()  # the consumer thread has the message

    def on_prerun(task_id: str = "", **_: Any) -> None:
        _local.record = {"task_id": task_id, "received": received.pop(task_id, None),
                         "start": time.time()}

    def on_postrun(task_id: str = "", **_: Any) -> None:
        record = getattr(_local, "record", None)
        _local.record = None
        if record is not None and record["task_id"] == task_id:
            record["end"] = time.time()
            client.rpush(key, json.dumps(record))

    signals.task_received.connect(on_received, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)


def read(redis_url: str, key: str) -> list[dict[str, Any]]:
    """Take every record pushed so far (the list is emptied)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    with client.pipeline() as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
    return [json.loads(r) for r in raw]


def stage_table(records: Iterable[Mapping[str, Any]],
                client: Mapping[str, tuple[float, float, float]]) -> dict[str, list[float]]:
    """Milliseconds per stage and request: ``client`` maps a task id to (sent, published, got).

    publish: the producer's submit; broker: published until the worker's consumer has it;
    to thread: until a pool thread starts it; claim, check, attempt, engine, stash, finish:
    the timed calls; reply: from the stash, which publishes the result with it (the finish
    runs after it), until the caller has the result.
    """
    out: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        out.setdefault(name, []).append(max(seconds, 0.0) * 1000)

    for r in records:
        sent = client.get(r["task_id"])
        if sent is None:
            continue
        t_sent, t_pub, t_got = sent
        add("publish", t_pub - t_sent)
        if r.get("received"):
            add("broker", r["received"] - t_pub)
            add("to thread", r["start"] - r["received"])
        for stage, _, _ in _TIMED:
            if stage in r:
                add(stage, r[stage][1] - r[stage][0])
        add("reply", t_got - (r["stash"][1] if "stash" in r else r["end"]))
    return out


def engine_spread_ms(records: Iterable[Mapping[str, Any]]) -> float:
    """How far apart the first and last request of a mode entered the engine (ms): requests
    that arrive together share the engine's early steps."""
    starts = [r["engine"][0] for r in records if "engine" in r]
    return (max(starts) - min(starts)) * 1000 if len(starts) > 1 else 0.0


def summary_line(table: Mapping[str, list[float]]) -> str:
    """``stage p50/max`` for each stage, in milliseconds."""
    return ", ".join(f"{name} {statistics.median(v):.0f}/{max(v):.0f}"
                     for name, v in table.items() if v)


def main(argv: list[str]) -> None:
    """``KEY REDIS_URL celery-args...``: install the timers, then run ``celery``."""
    key, redis_url, *celery_args = argv
    install(redis_url, key)
    profile = os.environ.get("SLUICE_BENCH_PROFILE")
    if profile:
        from ops.bench import gpu_profile

        gpu_profile.install(profile)
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *celery_args]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
