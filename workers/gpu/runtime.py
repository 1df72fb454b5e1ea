"""Process-level lifecycle of the GPU worker: one engine per process, started and stopped once."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from models.domain.errors import ConfigError, SluiceError
from models.domain.settings import Settings, load_settings
from workers.gpu.batcher import LaneBatcher
from workers.gpu.engine_host import EngineHost
from workers.gpu.engine_io import ASYNC_PRIORITY, INTERACTIVE_PRIORITY
from workers.gpu.slot_gate import SlotGate
from workers.gpu.vllm_errors import engine_dead
from workers.providers.base import ProviderCall, ProviderReply
from workers.providers.vllm_engine import VllmEngineProvider

log = logging.getLogger("sluicegate.gpu")
GPU_QUEUE_SUFFIX = ".gpu"
_UID_INIT = "sluicegate.gpu.worker_init"
_UID_STOP = "sluicegate.gpu.worker_shutdown"


@dataclass
class GpuRuntime:
    """The engine, the lane batchers and the provider adapter over them."""

    host: EngineHost
    batchers: dict[str, LaneBatcher]
    provider: VllmEngineProvider

    def health(self) -> dict[str, Any]:
        """The engine's health plus what each batching lane holds and sent lately."""
        report = self.host.health()
        report["lanes"] = {
            lane: {"pending": b.pending(), "recent_batches": list(b.batch_sizes)[-10:],
                   **({"in_engine": b.sink.in_engine(), "waiting_for_slot": b.sink.waiting(),
                       "slots": b.sink.slots} if isinstance(b.sink, SlotGate) else {})}
            for lane, b in self.batchers.items()}
        return report

    def stop(self) -> None:
        """Send what the batchers hold, then drain and stop the engine."""
        t0 = time.monotonic()
        for batcher in self.batchers.values():
            batcher.close()
        self.host.shutdown()
        log.info("vLLM engine stopped in %.1f s", time.monotonic() - t0)


_runtime: GpuRuntime | None = None
_lock = threading.Lock()


def start_gpu_runtime(settings: Settings, *,
                      host_factory: Callable[..., EngineHost] = EngineHost) -> GpuRuntime:
    """Start this process's engine from ``settings.gpu`` (blocks until ready); idempotent."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        gpu = settings.gpu
        if not gpu.model_path:
            raise ConfigError(
                "no GPU model configured: set SLUICE_GPU__MODEL_PATH to a Hugging Face model "
                "folder (python -m ops.gpu.tiny_model .sluice/models/tiny-llama builds a tiny one)")
        host = host_factory(
            str(Path(gpu.model_path).expanduser()), max_num_seqs=gpu.max_num_seqs,
            max_model_len=gpu.max_model_len, enable_prefix_caching=gpu.enable_prefix_caching,
            kv_cache_memory_bytes=gpu.kv_cache_memory_bytes, load_format=gpu.load_format,
            served_model_name=settings.routing.self_hosted_model,
            run_dir=Path(settings.home) / "gpu" / f"run-{os.getpid()}")
        if gpu.switch_interval_ms > 0:
            # The whole process (this is the GPU worker): see GpuSettings.switch_interval_ms.
            sys.setswitchinterval(gpu.switch_interval_ms / 1000)
        log.info("starting the vLLM engine on %s (max_num_seqs=%d, prefix caching %s)",
                 gpu.model_path, gpu.max_num_seqs, "on" if gpu.enable_prefix_caching else "off")
        t0 = time.monotonic()
        host.start()
        log.info("vLLM engine ready in %.1f s", time.monotonic() - t0)
        batchers = lane_batchers(host, settings)
        provider = VllmEngineProvider(host, batchers=batchers, lanes=settings.lanes,
                                      served_model=settings.routing.self_hosted_model)
        _runtime = GpuRuntime(host=host, batchers=batchers, provider=provider)
        return _runtime


def lane_batchers(host: EngineHost, settings: Settings) -> dict[str, LaneBatcher]:
    """A batcher for each lane whose ``batch_timeout_ms`` is set (by default: async only).

    A lane with no timeout sends each request the moment it arrives; vLLM's continuous batch
    still runs it together with everything else in flight.
    """
    priorities = {"interactive": INTERACTIVE_PRIORITY, "async": ASYNC_PRIORITY}
    out = {}
    for lane, priority in priorities.items():
        conf = settings.lanes.get(lane)
        if conf.batch_timeout_ms > 0:
            sink: Any = partial(host.submit_batch, priority=priority)
            if lane == "async":
                # Leave slots for interactive requests: vLLM admits none while all run.
                sink = SlotGate(sink, settings.gpu.async_slots)
            out[lane] = LaneBatcher(sink, batch_timeout_ms=conf.batch_timeout_ms,
                                    batch_max=conf.batch_max, name=lane)
    return out


def get_gpu_runtime() -> GpuRuntime:
    """This process's runtime, or EngineDead saying how to start a GPU worker."""
    runtime = _runtime
    if runtime is None:
        raise engine_dead("no engine runs in this worker process (GPU tasks must run on a "
                          "worker started with --pool threads -Q interactive.gpu,async.gpu)")
    return runtime


def stop_gpu_runtime() -> None:
    """Stop this process's engine, if any; safe to call twice."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.stop()


def gpu_provider(settings: Settings) -> RuntimeProvider:
    """The ``vllm`` adapter for the worker runtime: it follows this process's GPU runtime."""
    return RuntimeProvider()


class RuntimeProvider:
    """Looks the engine up per call, so a stopped engine reads as EngineDead, not a stale handle."""

    name = "vllm"

    def complete(self, call: ProviderCall) -> ProviderReply:
        """Serve ``call`` on this process's engine (EngineDead when there is none)."""
        return get_gpu_runtime().provider.complete(call)

    def close(self) -> None:
        """Nothing: the engine stops with the worker (``worker_shutdown``), not with a client."""


def install_gpu_signals(app: Any = None, *,
                        settings_loader: Callable[[Any], Settings] | None = None,
                        host_factory: Callable[..., EngineHost] = EngineHost,
                        ) -> Callable[[], None]:
    """Start the engine when a Celery worker that consumes a ``*.gpu`` queue boots.

    ``worker_init`` runs before the consumer starts, so no task is taken until the engine is
    ready; a failed start ends the worker (SystemExit) instead of leaving it to fail every task.
    ``worker_shutdown`` runs after a warm shutdown has let running tasks finish. ``app`` limits
    this to one app (None: any). Settings come from ``settings_loader(worker)``, by default the
    app's ``sluice_settings`` or the environment. Installing again replaces the handlers; the
    returned function disconnects both handlers.
    """
    from celery import signals

    def _mine(sender: Any) -> bool:
        return sender is not None and (app is None or getattr(sender, "app", None) is app)

    def _on_worker_init(sender: Any = None, **_: Any) -> None:
        if not _mine(sender):
            return
        queues = gpu_queues_of(sender)
        if not queues:
            return  # an API worker: no engine here
        pool = pool_name(getattr(sender, "pool_cls", ""))
        if pool != "threads":
            raise SystemExit(
                f"sluicegate: the worker consuming {', '.join(queues)} uses the {pool!r} pool, "
                "which cannot host vLLM; start it with --pool threads")
        try:
            settings = (settings_loader(sender) if settings_loader else
                        getattr(sender.app, "sluice_settings", None) or load_settings())
            start_gpu_runtime(settings, host_factory=host_factory)
        except SluiceError as exc:
            raise SystemExit(f"sluicegate: the GPU worker cannot start: {exc.message}") from exc

    def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
        if _mine(sender):
            stop_gpu_runtime()

    # The newest install wins: with one dispatch uid a second connect would be ignored, and the
    # first install (workers.tasks, for any app) would keep its own host factory and app.
    signals.worker_init.disconnect(dispatch_uid=_UID_INIT)
    signals.worker_shutdown.disconnect(dispatch_uid=_UID_STOP)
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid=_UID_INIT)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid=_UID_STOP)

    def uninstall() -> None:
        signals.worker_init.disconnect(dispatch_uid=_UID_INIT)
        signals.worker_shutdown.disconnect(dispatch_uid=_UID_STOP)

    return uninstall


def gpu_queues_of(worker: Any) -> list[str]:
    """Names of the ``*.gpu`` queues a Celery worker will consume."""
    consume = getattr(getattr(getattr(worker, "app", None), "amqp", None), "queues", None)
    names = list(getattr(consume, "consume_from", None) or {})
    return sorted(n for n in names if n.endswith(GPU_QUEUE_SUFFIX))


def pool_name(pool_cls: Any) -> str:
    """``threads``, ``prefork``, ``solo``... from a ``--pool`` value or pool class."""
    if isinstance(pool_cls, str):
        name = pool_cls
    else:
        name = f"{getattr(pool_cls, '__module__', '')}.{getattr(pool_cls, '__name__', '')}"
    name = name.lower()
    if "thread" in name:
        return "threads"
    for known in ("prefork", "solo", "eventlet", "gevent", "processes"):
        if known in name:
            return "prefork" if known == "processes" else known
    return name or "unknown"
