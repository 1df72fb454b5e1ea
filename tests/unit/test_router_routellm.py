"""The RouteLLM data, when present: counts after decontamination, and routers beat random."""

from __future__ import annotations

import os

import pytest

from ops.router import metrics as M
from ops.router.datasets import contaminated, default_data_dir, load_dataset
from ops.router.evaluation import out_of_fold_scores

DATA = default_data_dir()


def need_data(folder: str) -> None:
    """Skip without the data, except in CI, where its absence is a failure."""
    if not (DATA / folder).is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the RouteLLM data at {DATA} (or set SLUICE_ROUTELLM_DATA)")
        pytest.skip(f"no RouteLLM data at {DATA}")


@pytest.fixture(scope="module")
def gsm8k() -> list:
    need_data("gsm8k")
    return load_dataset(DATA, ["gsm8k"])


def test_contaminated_prompts_are_left_out(gsm8k: list) -> None:
    bad = contaminated(DATA, "gsm8k")
    assert bad and not bad & {ex.prompt for ex in gsm8k}
    # 1,319 GSM8K test prompts less the contaminated ones.
    assert len(gsm8k) == 1319 - len(bad)
    weak = sum(ex.weak for ex in gsm8k) / len(gsm8k)
    strong = sum(ex.strong for ex in gsm8k) / len(gsm8k)
    assert 0.60 < weak < 0.67 and 0.83 < strong < 0.88  # README: 63.8 % and 85.7 % before


def test_mt_bench_uses_judge_scores_of_both_turns() -> None:
    need_data("mt_bench")
    rows = load_dataset(DATA, ["mt-bench"])
    assert 60 <= len(rows) < 80  # 80 questions less the contaminated ones
    assert all(0.0 <= ex.weak <= 1.0 and 0.0 <= ex.strong <= 1.0 for ex in rows)
    assert sum(ex.strong for ex in rows) > sum(ex.weak for ex in rows)


@pytest.mark.slow
def test_routers_beat_random_on_gsm8k(gsm8k: list) -> None:
    weak = [ex.weak for ex in gsm8k]
    strong = [ex.strong for ex in gsm8k]
    apgr = {name: M.apgr(M.quality_curve(out_of_fold_scores(gsm8k, name, folds=3), weak,
                                         strong))
            for name in ("random", "heuristic", "learned")}
    assert abs(apgr["random"] - 0.5) < 0.06
    assert apgr["heuristic"] > 0.53
    assert apgr["learned"] > 0.58
