"""``sluice router train`` and ``eval`` end to end on a small labelled file built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli.router import router_app
from ops.router.datasets import save_jsonl
from tests.unit.test_router_learned import labelled_set

runner = CliRunner()


def test_train_then_score_then_eval(tmp_path: Path) -> None:
    data = tmp_path / "labelled.jsonl"
    save_jsonl(labelled_set(300, seed=11), data)
    artifact = tmp_path / "r.npz"
    res = runner.invoke(router_app, ["train", "--data", str(data), "--out", str(artifact),
                                     "--folds", "3"])
    assert res.exit_code == 0, res.output
    meta = json.loads(artifact.with_suffix(".json").read_text())
    assert meta["metrics"]["cv_folds"] == 3 and meta["metrics"]["apgr"] > 0.6

    res = runner.invoke(router_app, ["score", "Rephrase this: {x}.", "--router", "learned",
                                     "--artifact", str(artifact)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tier"] in ("cheap", "flagship")

    out = tmp_path / "eval"
    res = runner.invoke(router_app, ["eval", "--data", str(data), "-r", "heuristic", "-r",
                                     "random", "-r", "learned", "--folds", "3",
                                     "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "router_eval.json").read_text())
    by_router = {r["router"]: r for r in doc["results"]}
    assert set(by_router) == {"heuristic", "random", "learned", "oracle"}
    # The data is learnable from its text; random is not.
    assert by_router["learned"]["apgr"] > by_router["random"]["apgr"] + 0.1
    assert (out / "router_eval.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "router_eval.md").read_text().splitlines()
    assert "APGR" in table[0] and len(table) == 2 + len(by_router)


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(router_app, ["eval", "--data", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert "no router data" in res.output


def test_eval_writes_every_out_of_fold_score_and_they_recompute_its_figures(
        tmp_path: Path) -> None:
    import numpy as np

    from ops.router import metrics as M

    data = tmp_path / "labelled.jsonl"
    examples = labelled_set(200, seed=5)
    save_jsonl(examples, data)
    scores = tmp_path / "scores.jsonl"
    res = runner.invoke(router_app, ["eval", "--data", str(data), "-r", "learned", "-r",
                                     "heuristic", "--folds", "3", "--out", str(tmp_path / "e"),
                                     "--scores-out", str(scores), "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in scores.read_text().splitlines()]
    learned = [r for r in lines if r["router"] == "learned"]
    assert len(learned) == len(examples) and all(r["score"] is not None for r in learned)
    doc = json.loads((tmp_path / "e" / "router_eval.json").read_text())
    reported = next(r for r in doc["results"] if r["router"] == "learned")
    curve = M.quality_curve(np.array([r["score"] for r in learned]),
                            [r["weak"] for r in learned], [r["strong"] for r in learned])
    again = M.summarize(curve)
    assert again["apgr"] == pytest.approx(reported["apgr"], abs=1e-3)
    assert again["share_for_95pct_strong"] == pytest.approx(reported["share_for_95pct_strong"],
                                                            abs=1e-3)
