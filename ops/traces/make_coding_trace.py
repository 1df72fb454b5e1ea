"""Write the synthetic coding-assistant trace: autocomplete lines, explanations, multi-file edits.

``python -m ops.traces.make_coding_trace --n 300 --seed 2027`` writes
``ops/traces/coding_assistant.jsonl``. Each request's true kind is in ``tags.label`` (the
replay reports by it; routing never reads it). Some editors send their task type
(``tags.task_type``, the ``x-sluice-task-type`` header); the rest are placed by the ladder's
rules (:data:`CODING_LADDER`).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from ops.replay.trace import write_trace

OUT = Path(__file__).resolve().parent / "coding_assistant.jsonl"
#: Shares of the brief's example: mostly completions, some explanations, a few big edits.
MIX = (("autocomplete", 0.6), ("explain", 0.3), ("multi-file-edit", 0.1))

#: The coding feature's ladder: GPT-4o-mini < Claude Haiku < Claude Sonnet, with the brief's
#: routing by task type (Haiku completes lines, GPT-4o-mini explains, Sonnet edits many files).
CODING_LADDER: dict[str, Any] = {
    "rungs": ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"],
    "target": 0.6,
    "task_types": [
        {"name": "autocomplete", "rung": "claude-haiku-4-5", "expected_output_tokens": 48,
         "when": {"prompt_regex": "(?i)^complete (this|the) (line|code)",
                  "max_prompt_tokens": 1500}},
        {"name": "multi-file-edit", "rung": "claude-sonnet-4-6",
         "expected_output_tokens": 1500,
         "when": {"prompt_regex": "(?i)(refactor|rename .* across|in every file)"}},
        {"name": "explain", "rung": "gpt-4o-mini", "expected_output_tokens": 300,
         "when": {"prompt_regex": "(?i)^(explain|what does|why does|how does)"}},
    ],
}

_SYSTEM = ("You are a coding assistant inside an editor. Answer with code when asked for code "
           "and with short plain prose otherwise. " * 8).strip()
_FUNCS = ["parse_config", "load_user", "render_table", "retry_with_backoff", "merge_sorted",
          "slugify", "hash_password", "paginate", "debounce", "flatten"]
_FILES = ["api/routes.py", "api/models.py", "core/service.py", "core/repo.py", "web/app.ts",
          "web/store.ts", "tests/test_service.py", "cli/main.py"]


def _code(rng: random.Random, lines: int) -> str:
    name = rng.choice(_FUNCS)
    body = [f"def {name}(items, limit={rng.randint(2, 50)}):"]
    for i in range(lines):
        body.append(f"    value_{i} = items[{i}] if len(items) > {i} else None")
    return "\n".join(body)


def _request(rng: random.Random, kind: str) -> dict[str, Any]:
    base: dict[str, Any] = {"team": "devtools", "feature": "coding", "model": "auto",
                            "static": {"system": {"$ref": "system"}},
                            "tags": {"label": kind}}
    if kind == "autocomplete":
        text = f"Complete this line:\n{_code(rng, rng.randint(2, 12))}\n    return"
        base.update(max_tokens=64)
    elif kind == "explain":
        ask = rng.choice(["Explain what this function does", "What does this function do",
                          "Why does this function return None here",
                          "How does this function handle an empty list"])
        text = f"{ask}, briefly?\n{_code(rng, rng.randint(4, 20))}"
        base.update(max_tokens=400)
    else:
        files = rng.sample(_FILES, rng.randint(3, 6))
        parts = [f"# file: {f}\n{_code(rng, rng.randint(10, 30))}" for f in files]
        verb = rng.choice(["Refactor these files so that", "Rename parse_config across these "
                           "files and make sure"])
        text = f"{verb} every caller keeps working.\n\n" + "\n\n".join(parts)
        base.update(max_tokens=2000)
    if rng.random() < 0.3:  # an editor that names its task type itself
        base["tags"]["task_type"] = kind
    base["messages"] = [{"role": "user", "content": text}]
    return base


def build(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` requests in the mix's shares, shuffled by ``seed``."""
    rng = random.Random(seed)
    kinds = [k for k, share in MIX for _ in range(round(n * share))][:n]
    rng.shuffle(kinds)
    return [_request(rng, k) for k in kinds]


def main() -> None:
    """Command line: write the trace."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    header = (f"synthetic coding-assistant trace: {args.n} requests, seed {args.seed}\n"
              f"regenerate: python -m ops.traces.make_coding_trace --n {args.n} "
              f"--seed {args.seed}")
    count = write_trace(args.out, {"system": _SYSTEM}, build(args.n, args.seed), header)
    print(f"wrote {count} requests to {args.out}")


if __name__ == "__main__":
    main()
