"""``/v1/responses`` overhead p50 / p99 and CPU per request, beside LiteLLM's own
``/v1/responses``.

    python -m ops.bench.responses_bench [--rates 100] [--seconds 8] [--server-workers 2]
                                        [--celery-workers CORES] [--repeats 1]

The stand-in directly, sluicegate's Responses door (an OpenAI model: the worker calls the
stand-in's Responses API) and a LiteLLM proxy routing the same model to the stand-in, called
with OpenAI's Responses API (``ops/bench/door_compare.py`` runs and reports them).
"""

from __future__ import annotations

from typing import Any

from ops.bench.door_compare import DoorBench, main

MODEL = "gpt-4o-mini"


def _body(nonce: str) -> Any:
    def body(i: int) -> dict[str, object]:
        return {"model": MODEL, "max_output_tokens": 16,
                "input": f"Rephrase product title {i} {nonce}"}
    return body


BENCH = DoorBench(path="/v1/responses", model=MODEL, provider="openai", body=_body,
                  auth=lambda key: {"authorization": f"Bearer {key}"})

if __name__ == "__main__":
    main(BENCH, __doc__)
