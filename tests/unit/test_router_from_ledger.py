"""``sluice router train --from-ledger``: judged pairs of a feature as training data, and an
artifact promoted only when it beats the current one out of fold."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

import models.db.stored_text  # noqa: F401  (its table)
from models.db.engine import make_engine, session_factory
from models.db.stored_text import StoredTextRow, store_if_opted
from models.db.tables import Base, FeedbackRow, JudgementRow
from models.domain.request import parse_request
from models.domain.settings import PrivacySettings
from ops.cli.router import router_app
from ops.router.from_ledger import last_user, ledger_examples

runner = CliRunner()


def _fill(url: str, n: int = 160) -> None:
    rng = random.Random(3)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    now = datetime.now(timezone.utc)
    with session_factory(engine)() as s:
        for i in range(n):
            hard = i % 2 == 0
            text = (f"Prove that the series {i} converges and derive its closed form step by "
                    "step" if hard else f"Rephrase this product title: blue mug {i}")
            agree = (not hard) if rng.random() > 0.05 else hard
            rid = f"r{i}"
            s.add(StoredTextRow(request_id=rid, created_at=now, expires_at=now + timedelta(1),
                                team="t", feature="faq", prompt=f"system: be brief\nuser: {text}",
                                answer="..."))
            s.add(JudgementRow(request_id=rid, created_at=now, org="default", team="t",
                               feature="faq", served_tier="cheap", served_model="gpt-4o-mini",
                               shadow_model="gpt-4o", judge="exact", agree=agree))
        s.add(StoredTextRow(request_id="fb", created_at=now, expires_at=now + timedelta(1),
                            team="t", feature="faq", prompt="user: Rephrase: red cup",
                            answer="..."))
        s.add(FeedbackRow(request_id="fb", created_at=now, team="t", feature="faq",
                          tier="cheap", thumb=1))
        s.commit()
    engine.dispose()


def test_judged_pairs_and_feedback_become_examples(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    _fill(url, 20)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        examples = ledger_examples(s, ["faq"])
    engine.dispose()
    assert len(examples) == 21
    assert examples[0].prompt.startswith("Prove that")
    assert examples[-1].prompt == "Rephrase: red cup"
    assert {e.strong for e in examples} == {1.0} and examples[-1].weak == 1.0
    assert last_user("system: x\nuser: a\nassistant: b\nuser: c") == "c"


def test_each_orgs_verdict_is_paired_with_its_own_prompt(tmp_path: Path) -> None:
    # Three orgs, one team name, one request id: each org's verdict must train on its own
    # prompt (joined on id and team alone, every verdict took the first org's text, and the
    # first org's judgement hid the third org's thumb).
    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    privacy = PrivacySettings(store_text_features=["faq"], retention_days=1)
    now = datetime.now(timezone.utc)
    with session_factory(engine)() as s:
        for org, agree in (("acme", True), ("globex", False), ("initech", None)):
            req = parse_request({"org": org, "team": "t", "feature": "faq", "request_id": "r1",
                                 "messages": [{"role": "user", "content": f"{org} asks"}]})
            assert store_if_opted(s, privacy, req, "...", now=now)
            if agree is not None:
                s.add(JudgementRow(request_id="r1", created_at=now, org=org, team="t",
                                   feature="faq", served_tier="cheap",
                                   served_model="gpt-4o-mini", shadow_model="gpt-4o",
                                   judge="exact", agree=agree))
            # A thumb on a judged request adds nothing; on initech's it is the label.
            s.add(FeedbackRow(request_id="r1", created_at=now, org=org, team="t",
                              feature="faq", tier="cheap", thumb=-1))
        s.commit()
        examples = ledger_examples(s, ["faq"])
        # --org: a feature name is each org's own, so one org's traffic trains alone.
        mine = ledger_examples(s, ["faq"], orgs=["acme", "initech"])
    engine.dispose()
    assert sorted((e.prompt, e.weak, e.benchmark) for e in examples) == [
        ("acme asks", 1.0, "ledger:faq"), ("globex asks", 0.0, "ledger:faq"),
        ("initech asks", 0.0, "feedback:faq")]
    assert sorted((e.prompt, e.benchmark) for e in mine) == [
        ("acme asks", "ledger:faq"), ("initech asks", "feedback:faq")]


def test_a_new_artifact_is_promoted_only_when_it_beats_the_current_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    _fill(url)
    first = tmp_path / "faq.npz"
    report = tmp_path / "report"
    res = runner.invoke(router_app, ["train", "--from-ledger", "--feature", "faq", "--url", url,
                                     "--folds", "3", "--out", str(first), "--report",
                                     str(report)])
    assert res.exit_code == 0, res.output
    assert first.exists()
    # The same report as `sluice router eval`: plot, JSON and Markdown, candidate out of fold
    # beside the current artifact and the oracle, on the judged prompts.
    assert (report / "router_eval.png").stat().st_size > 0
    table = (report / "router_eval.md").read_text()
    assert "| ledger:faq | tfidf-lr | 161 |" in table and "| ledger:faq | current |" in table
    assert "| ledger:faq | oracle |" in table
    meta = json.loads((report / "router_eval.json").read_text())
    assert meta["meta"]["promotion"]["promote"] is True, meta["meta"]
    # Against itself (trained on these very prompts) a fresh out-of-fold fit cannot do better.
    again = tmp_path / "again.npz"
    res = runner.invoke(router_app, ["train", "--from-ledger", "--feature", "faq", "--url", url,
                                     "--folds", "3", "--out", str(again), "--current",
                                     str(first)])
    assert res.exit_code == 1 and "not promoted" in res.output
    assert not again.exists()
