"""Labelled routing data: per-prompt quality of a weak (cheap) and a strong (flagship) model."""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.domain.errors import ConfigError

#: Environment variable that points at the RouteLLM evaluation folder.
DATA_ENV = "SLUICE_ROUTELLM_DATA"
BENCHMARKS: tuple[str, ...] = ("gsm8k", "mmlu", "mt-bench")
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"


@dataclass(frozen=True)
class Example:
    """One prompt and how well each model answered it (1.0 correct, 0.0 wrong; judge score / 10)."""

    prompt: str
    weak: float
    strong: float
    #: Reporting only: the router never sees it (features come from the prompt text alone).
    benchmark: str = "custom"
    history_turns: int = 0

    @property
    def cheap_suffices(self) -> bool:
        """The training label: the flagship would not have done better than the cheap model."""
        return self.weak >= self.strong


def default_data_dir() -> Path:
    """``$SLUICE_ROUTELLM_DATA``, else ``../shared/data/routellm`` beside the repository root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data" / "routellm"


def load_dataset(path: str | Path | None = None,
                 benchmarks: Sequence[str] = BENCHMARKS) -> list[Example]:
    """Examples from a RouteLLM folder (contaminated prompts removed) or a labelled JSONL file."""
    root = Path(path) if path is not None else default_data_dir()
    if root.is_file():
        return load_jsonl(root)
    if not root.is_dir():
        raise ConfigError(
            f"no router data at {root}; pass --data PATH or set {DATA_ENV} to the RouteLLM "
            "evaluation folder (with gsm8k/, mmlu/, mt_bench/) or to a labelled .jsonl file",
            path=str(root))
    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {', '.join(unknown)}; use {', '.join(BENCHMARKS)}")
    loaders = {"gsm8k": _load_gsm8k, "mmlu": _load_mmlu, "mt-bench": _load_mt_bench}
    out: list[Example] = []
    for name in benchmarks:
        out.extend(loaders[name](root))
    return out


def load_jsonl(path: str | Path) -> list[Example]:
    """Rows of ``{"prompt", "weak", "strong"}`` (or ``{"prompt", "cheap_ok"}``), one per line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "cheap_ok" in row:
                weak, strong = (1.0, 1.0) if row["cheap_ok"] else (0.0, 1.0)
            elif "weak" in row and "strong" in row:
                weak, strong = float(row["weak"]), float(row["strong"])
            else:
                raise ConfigError(f"{path}:{n}: a row needs weak and strong, or cheap_ok")
            out.append(Example(str(row["prompt"]), weak, strong,
                               str(row.get("benchmark", "custom")),
                               int(row.get("history_turns", 0))))
    return out


def save_jsonl(examples: Iterable[Example], path: str | Path) -> None:
    """Write examples in the format :func:`load_jsonl` reads."""
    with open(path, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps({"prompt": ex.prompt, "weak": ex.weak, "strong": ex.strong,
                                 "benchmark": ex.benchmark,
                                 "history_turns": ex.history_turns}) + "\n")


def contaminated(root: Path, folder: str) -> set[str]:
    """Eval prompts that overlap RouteLLM's router training data, to be left out."""
    path = root / folder / "contaminated_prompts.jsonl"
    if not path.exists():
        return set()
    with open(path, encoding="utf-8") as fh:
        return {json.loads(line)["eval_prompt"] for line in fh if line.strip()}


def _truth(value: str) -> float:
    return 1.0 if value.strip().lower() == "true" else 0.0


def _read_correctness_csv(path: Path, skip: set[str], benchmark: str) -> list[Example]:
    # GSM8K rows carry whole responses; lift the csv module's 128 KiB field limit, if lower.
    csv.field_size_limit(max(csv.field_size_limit(), 16 * 1024 * 1024))
    with open(path, encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        return [Example(r["prompt"], _truth(r[WEAK_MODEL]), _truth(r[STRONG_MODEL]), benchmark)
                for r in rows if r["prompt"] not in skip]


def _load_gsm8k(root: Path) -> list[Example]:
    return _read_correctness_csv(root / "gsm8k" / "gsm8k_responses.csv",
                                 contaminated(root, "gsm8k"), "gsm8k")


def _load_mmlu(root: Path) -> list[Example]:
    skip = contaminated(root, "mmlu")
    out: list[Example] = []
    # Sorted so the example order (and so the folds) is the same on every machine.
    for path in sorted((root / "mmlu" / "responses").glob("mmlu_*.csv")):
        out.extend(_read_correctness_csv(path, skip, "mmlu"))
    return out


def _load_mt_bench(root: Path) -> list[Example]:
    skip = contaminated(root, "mt_bench")
    scores: dict[tuple[int, str], list[float]] = defaultdict(list)
    with open(root / "mt_bench" / "judgements.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                j = json.loads(line)
                scores[(int(j["question_id"]), j["model"])].append(float(j["score"]))
    out = []
    with open(root / "mt_bench" / "question.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            turns = q["turns"]
            if any(t in skip for t in turns):
                continue
            weak = scores.get((int(q["question_id"]), WEAK_MODEL))
            strong = scores.get((int(q["question_id"]), STRONG_MODEL))
            if not weak or not strong:
                continue
            # As RouteLLM does: route on the first turn; the routed model answers both turns,
            # so its quality is the mean judge score of the two, scaled to [0, 1].
            out.append(Example(turns[0], sum(weak) / len(weak) / 10.0,
                               sum(strong) / len(strong) / 10.0, "mt-bench"))
    return out
