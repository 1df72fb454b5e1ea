"""The few calls into vLLM's request API: render a prompt, sampling params, future plumbing."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from workers.gpu.engine_io import EngineOutput, EngineRequest


async def render(engine: Any, req: EngineRequest) -> Any:
    """Tokenize ``req`` into vLLM's engine input: chat messages through the model's template.

    This is the renderer path vLLM recommends over raw prompts (deprecated in 0.32); chat
    prompts get the same template and special-token handling as ``vllm serve``'s chat API.
    """
    if req.messages is not None:
        from vllm.renderers.params import ChatParams

        _, (engine_input,) = await engine.renderer.render_chat_async(
            [[dict(m) for m in req.messages]], ChatParams())
        return engine_input
    from vllm.renderers.inputs.preprocess import parse_model_prompt

    raw: object = req.prompt if isinstance(req.prompt, str) else {
        "prompt_token_ids": list(req.prompt or ())}
    (engine_input,) = await engine.renderer.render_cmpl_async(
        [parse_model_prompt(engine.model_config, raw)])
    return engine_input


def sampling_params(req: EngineRequest) -> Any:
    """vLLM ``SamplingParams`` for ``req``, asking for the final output only."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature,
                          stop=list(req.stop) or None, ignore_eos=req.ignore_eos, seed=req.seed,
                          # no per-token wake-ups of the caller
                          output_kind=RequestOutputKind.FINAL_ONLY)


def chain(task: asyncio.Future[EngineOutput],
          fut: concurrent.futures.Future[EngineOutput]) -> None:
    """Copy the task's outcome into ``fut``; cancelling ``fut`` aborts the request in vLLM."""
    loop = task.get_loop()

    def _from_task(t: asyncio.Future[EngineOutput]) -> None:
        try:
            if t.cancelled():
                fut.cancel()
            elif t.exception() is not None:
                fut.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(t.result())
        except concurrent.futures.InvalidStateError:
            pass  # the caller cancelled first; nobody is waiting for this outcome

    def _from_caller(f: concurrent.futures.Future[EngineOutput]) -> None:
        if f.cancelled() and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    task.add_done_callback(_from_task)
    fut.add_done_callback(_from_caller)
