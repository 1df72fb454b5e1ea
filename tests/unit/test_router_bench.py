"""The router bench runs end to end on a few prompts and reports every row it promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ops.bench import router_bench
from ops.router.training import TrainConfig, fit_router
from tests.unit.test_router_learned import labelled_set


def test_bench_reports_heuristic_and_learned_beside_floors(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    path = fit_router(labelled_set(150, seed=1), TrainConfig(min_df=1)).save(tmp_path / "a.npz")
    monkeypatch.setattr(sys, "argv", ["router_bench", "--n", "60", "--artifact", str(path),
                                      "--no-embed", "--json"])
    router_bench.main()
    res = json.loads(capsys.readouterr().out)
    assert res["prompts"] == 60
    for key in ("dict", "re", "heuristic", "learned"):
        assert 0 < res[key]["p50_us"] <= res[key]["p99_us"]
    assert res["learned"]["version"].startswith("tfidf-lr-")
    assert res["heuristic"]["batched_per_s"] > 0 and res["learned"]["batched_per_s"] > 0
