"""``/v1/messages`` overhead p50 / p99 and CPU per request, beside LiteLLM's own ``/v1/messages``.

    python -m ops.bench.messages_bench [--rates 100] [--seconds 8] [--server-workers 2]
                                       [--celery-workers CORES] [--repeats 1]

The stand-in directly, sluicegate's Messages door and a LiteLLM proxy routing the same Claude
model to the stand-in's Anthropic API, called with Anthropic's Messages API
(``ops/bench/door_compare.py`` runs and reports them, on ``ops/bench/door_bench.py``'s stack).
"""

from __future__ import annotations

from typing import Any

from ops.bench.door_compare import DoorBench, main

MODEL = "claude-haiku-4-5"


def _body(nonce: str) -> Any:
    def body(i: int) -> dict[str, object]:
        return {"model": MODEL, "max_tokens": 16, "messages": [
            {"role": "user", "content": f"Rephrase product title {i} {nonce}"}]}
    return body


BENCH = DoorBench(path="/v1/messages", model=MODEL, provider="anthropic", body=_body,
                  auth=lambda key: {"x-api-key": key},
                  headers={"anthropic-version": "2023-06-01"})

if __name__ == "__main__":
    main(BENCH, __doc__)
