"""One in-process vLLM AsyncLLM on its own asyncio loop thread, callable from many threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.domain.errors import ConfigError, EngineDead
from workers.gpu.engine_io import EngineOutput, EngineRequest, make_request
from workers.gpu.vllm_calls import chain, render, sampling_params
from workers.gpu.vllm_env import isolate_vllm_env
from workers.gpu.vllm_errors import engine_dead, translate

Future = concurrent.futures.Future


class EngineHost:
    """Owns one vLLM engine: start, submit (thread-safe), health and shutdown.

    Every Celery thread submits here and waits on a :class:`concurrent.futures.Future`; the
    engine itself runs on a dedicated event-loop thread, so all requests in flight share one
    continuous batch.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, max_num_seqs: int = 64,
                 max_model_len: int = 2048, enable_prefix_caching: bool = True,
                 kv_cache_memory_bytes: int = 512 * 1024 * 1024,
                 max_num_batched_tokens: int | None = None, dtype: str = "auto",
                 served_model_name: str | None = None,
                 run_dir: str | os.PathLike[str] | None = None,
                 start_timeout_s: float = 600.0, shutdown_timeout_s: float = 30.0,
                 drain_timeout_s: float = 30.0, seed: int = 0,
                 load_format: str = "auto") -> None:
        self.model_path = str(model_path)
        self.load_format = load_format
        self.served_model_name = served_model_name or Path(self.model_path).name
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        self.kv_cache_memory_bytes = kv_cache_memory_bytes
        self.max_num_batched_tokens = max_num_batched_tokens
        self.dtype = dtype
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.start_timeout_s = start_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.seed = seed
        self._lock = threading.Lock()
        self._state = "new"  # new -> starting -> running -> stopping -> stopped | failed
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._started_at = 0.0
        self._start_error = ""
        self.counters = {"requests": 0, "failed": 0, "prompt_tokens": 0, "cached_tokens": 0,
                         "output_tokens": 0}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EngineHost:
        """Start the engine (blocks 12-30 s on the tiny model); raise EngineDead if it fails."""
        with self._lock:
            if self._state != "new":
                raise ConfigError(f"this EngineHost is {self._state}; build a new one to restart")
            self._state = "starting"
        if self.run_dir is not None:
            isolate_vllm_env(self.run_dir)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sluice-vllm-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            # Built on the loop thread so vLLM's output handler binds to that loop.
            engine = asyncio.run_coroutine_threadsafe(self._create(), loop).result(
                timeout=self.start_timeout_s)
        except BaseException as exc:
            self._start_error = f"{type(exc).__name__}: {exc}"
            self._stop_loop()
            with self._lock:
                self._state = "failed"
            raise engine_dead(f"it failed to start from {self.model_path!r} "
                              f"({self._start_error[:300]})") from exc
        with self._lock:
            self._engine, self._state, self._started_at = engine, "running", time.time()
        return self

    async def _create(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=self.model_path, served_model_name=self.served_model_name,
            max_num_seqs=self.max_num_seqs, max_model_len=self.max_model_len,
            max_num_batched_tokens=self.max_num_batched_tokens,
            enable_prefix_caching=self.enable_prefix_caching,
            kv_cache_memory_bytes=self.kv_cache_memory_bytes, dtype=self.dtype,  # type: ignore[arg-type]
            seed=self.seed, load_format=self.load_format,
            # eager: no torch.compile/inductor warm-up, which is slow on CPU and buys little here
            enforce_eager=True,
            # lanes map to priorities: the interactive lane overtakes queued async work
            scheduling_policy="priority",
            disable_log_stats=True)
        return AsyncLLM.from_engine_args(args)

    def shutdown(self) -> None:
        """Refuse new work, let in-flight requests finish (up to drain_timeout_s), stop vLLM."""
        with self._lock:
            if self._state in ("new", "stopped", "failed"):
                self._state = "stopped" if self._state == "new" else self._state
                return
            self._state = "stopping"
            self._idle.wait_for(lambda: self._inflight == 0, timeout=self.drain_timeout_s)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._close_engine(), loop)
            try:
                fut.result(timeout=self.shutdown_timeout_s + 30)
            except BaseException:  # noqa: BLE001 - we are stopping either way
                pass
        self._stop_loop()
        with self._lock:
            self._state = "stopped"

    async def _close_engine(self) -> None:
        # Requests still running after the drain are cancelled; they fail with EngineDead.
        me = asyncio.current_task()
        stragglers = [t for t in asyncio.all_tasks()
                      if t is not me and getattr(t, "_sluice_request", False)]
        for task in stragglers:
            task.cancel()
        if stragglers:
            # let them abort their vLLM requests while the engine can still take the abort
            await asyncio.wait(stragglers, timeout=5)
        engine, self._engine = self._engine, None
        if engine is not None:
            # vLLM wants shutdown() on the loop that owns the engine.
            engine.shutdown(timeout=self.shutdown_timeout_s)
            await asyncio.sleep(0)  # let the cancelled output handler finish

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> EngineHost:
        return self.start() if self._state == "new" else self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- requests --------------------------------------------------------------------------

    def submit(self, prompt: str | Sequence[int] | None = None, *,
               messages: Sequence[Mapping[str, str]] | None = None, max_tokens: int = 256,
               temperature: float = 0.0, stop: Sequence[str] = (), priority: int = 0,
               request_id: str | None = None, ignore_eos: bool = False,
               seed: int | None = None) -> Future[EngineOutput]:
        """Queue one generation now; raise EngineDead at once if the engine is not running."""
        return self.submit_request(make_request(
            prompt, messages=messages, max_tokens=max_tokens, temperature=temperature,
            stop=stop, priority=priority, request_id=request_id, ignore_eos=ignore_eos,
            seed=seed))

    def submit_request(self, request: EngineRequest) -> Future[EngineOutput]:
        """Queue one :class:`EngineRequest`."""
        return self.submit_batch([request])[0]

    def submit_batch(self, requests: Sequence[EngineRequest], *,
                     priority: int | None = None) -> list[Future[EngineOutput]]:
        """Queue several requests in one loop tick, so they enter the same engine step."""
        if priority is not None:
            requests = [replace(r, priority=priority) for r in requests]
        with self._lock:
            loop = self._check_running()
            self._inflight += len(requests)
        futures: list[Future[EngineOutput]] = [Future() for _ in requests]
        for fut in futures:
            fut.add_done_callback(self._one_done)
        loop.call_soon_threadsafe(self._launch, list(requests), futures)
        return futures

    def _check_running(self) -> asyncio.AbstractEventLoop:
        if self._state != "running" or self._loop is None:
            why = {"new": "it has not been started in this process",
                   "starting": "it is still starting",
                   "failed": f"it failed to start ({self._start_error[:200]})"}.get(
                       self._state, "it has been shut down")
            raise engine_dead(why, state=self._state)
        if self._engine is not None and self._engine.errored:
            raise engine_dead("the engine process died", state="dead")
        return self._loop

    def _launch(self, requests: list[EngineRequest], futures: list[Future[EngineOutput]]) -> None:
        # Runs on the loop thread: one task per request, all created before the next await.
        for req, fut in zip(requests, futures, strict=True):
            task = asyncio.ensure_future(self._generate(req, time.perf_counter()))
            task._sluice_request = True  # type: ignore[attr-defined]
            chain(task, fut)

    def _one_done(self, fut: Future[EngineOutput]) -> None:
        with self._lock:
            self._inflight -= 1
            if fut.cancelled() or fut.exception() is not None:
                self.counters["failed"] += 1
            else:
                out = fut.result()
                self.counters["requests"] += 1
                self.counters["prompt_tokens"] += out.prompt_tokens
                self.counters["cached_tokens"] += out.cached_tokens
                self.counters["output_tokens"] += out.output_tokens
            self._idle.notify_all()

    async def _generate(self, req: EngineRequest, t0: float) -> EngineOutput:
        engine = self._engine
        if engine is None:
            raise engine_dead("it has been shut down")
        try:
            engine_input = await render(engine, req)
            final = None
            async for out in engine.generate(engine_input, sampling_params(req), req.request_id,
                                             priority=req.priority):
                final = out
        except asyncio.CancelledError:
            if self._state == "stopping":
                raise engine_dead("it was shut down while the request was running") from None
            raise
        except Exception as exc:
            raise translate(exc, engine_errored=bool(engine.errored)) from exc
        if final is None or not final.outputs:
            raise engine_dead("the engine returned no output")
        choice = final.outputs[0]
        prompt_tokens = len(final.prompt_token_ids or ())
        return EngineOutput(
            request_id=req.request_id, text=choice.text, prompt_tokens=prompt_tokens,
            cached_tokens=min(int(final.num_cached_tokens or 0), prompt_tokens),
            output_tokens=len(choice.token_ids), finish_reason=str(choice.finish_reason or "stop"),
            cache_creation_tokens=int(final.num_cache_creation_tokens or 0),
            priority=req.priority, latency_s=time.perf_counter() - t0,
            stop_sequence=choice.stop_reason if isinstance(choice.stop_reason, str) else None)

    # -- health ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the engine runs and its process has not died."""
        engine = self._engine
        return self._state == "running" and engine is not None and not engine.errored

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Liveness plus load: probes the engine on its own loop, so a wedged loop reads dead."""
        alive, error = self.alive, ""
        if alive and self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._engine.check_health(), self._loop).result(
                    timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - any failure of the probe means not alive
                alive, error = False, f"{type(exc).__name__}: {exc}"
        elif self._state == "failed":
            error = self._start_error
        engine = self._engine
        with self._lock:
            return {
                "alive": alive, "state": self._state if alive or self._state != "running"
                else "dead", "model": self.served_model_name, "model_path": self.model_path,
                "running_requests": engine.get_num_unfinished_requests() if engine else 0,
                "inflight": self._inflight, "max_num_seqs": self.max_num_seqs,
                "prefix_caching": self.enable_prefix_caching,
                "uptime_s": round(time.time() - self._started_at, 1) if self._started_at else 0.0,
                "counters": dict(self.counters), "error": error,
            }


__all__ = ["EngineDead", "EngineHost", "EngineOutput", "EngineRequest"]
