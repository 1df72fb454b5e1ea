"""Feature ladders: the climb by score, task types, prices, capabilities, tiers, reloads."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from models.domain.catalogue import load_catalogue, parse_catalogue
from models.domain.charges import reach_worst_case, reachable
from models.domain.cost import worst_case_cost
from models.domain.errors import ConfigError, ValidationError
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings
from models.domain.tokens import prompt_count
from scheduler.route import decide_route
from scheduler.router.climb import climb
from scheduler.router.ladder import ladder_from_dict
from scheduler.router.ladder_book import LadderBook, write_ladders

CAT = load_catalogue()
CODING = {"rungs": ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"], "target": 0.6,
          "task_types": [
              {"name": "autocomplete", "rung": "claude-haiku-4-5",
               "when": {"prompt_regex": "(?i)^complete this", "max_prompt_tokens": 400}},
              {"name": "multi-file-edit", "rung": "claude-sonnet-4-6",
               "when": {"prompt_regex": "(?i)refactor"}},
              {"name": "explain", "rung": "gpt-4o-mini",
               "when": {"prompt_regex": "(?i)^explain"}}]}


class Fixed:
    """A scorer that always says the same."""

    name = "fixed"

    def __init__(self, score: float) -> None:
        self.value = score

    def score(self, request: Any) -> float:
        return self.value


def req(text: str = "hello", **extra: Any) -> Any:
    return parse_request({"team": "t", "feature": extra.pop("feature", "coding"),
                          "messages": [{"role": "user", "content": text}], **extra})


def route(request: Any, ladders: dict[str, Any], score: float = 0.5, catalogue: Any = CAT
          ) -> Any:
    return decide_route(request, catalogue, RoutingSettings(), scorer=Fixed(score),
                        ladders=LadderBook(ladders))


def test_auto_takes_the_cheapest_rung_whose_predicted_quality_meets_the_target() -> None:
    ladder = {"rungs": ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"], "target": 0.8}
    # Qualities 0, 0.5, 1: predicted s + (1 - s) q. s = 0.9: the first rung (0.9 >= 0.8).
    assert route(req(), {"coding": ladder}, 0.9).model == "gpt-4o-mini"
    # s = 0.65: rung 0 predicts 0.65, rung 1 0.825: the middle rung.
    r = route(req(), {"coding": ladder}, 0.65)
    assert (r.model, r.rung) == ("claude-haiku-4-5", 1)
    assert "predicted 0.825 >= 0.800" in r.reason
    assert route(req(), {"coding": ladder}, 0.2).model == "claude-sonnet-4-6"


def test_two_rungs_are_the_old_threshold_rule() -> None:
    ladder = {"coding": {"rungs": ["gpt-4o-mini", "gpt-4o"], "target": 0.5}}
    assert route(req(), ladder, 0.5).model == "gpt-4o-mini"
    assert route(req(), ladder, 0.49).model == "gpt-4o"


def test_features_without_a_ladder_keep_the_global_tiers() -> None:
    r = route(req(feature="other"), {"coding": CODING}, 0.9)
    assert (r.model, r.rung, r.task_type) == ("gpt-4o-mini", None, None)


def test_task_types_by_header_rule_and_the_ladder_otherwise() -> None:
    book = {"coding": CODING}
    by_rule = route(req("Complete this line: def f("), book)
    assert (by_rule.model, by_rule.task_type, by_rule.rung) == ("claude-haiku-4-5",
                                                                "autocomplete", 1)
    assert "rule prompt ~" in by_rule.reason
    edit = route(req("Please refactor the auth module"), book)
    assert (edit.model, edit.task_type) == ("claude-sonnet-4-6", "multi-file-edit")
    hinted = route(req("anything at all", tags={"task_type": "explain"}), book)
    assert (hinted.model, hinted.task_type) == ("gpt-4o-mini", "explain")
    assert "(header)" in hinted.reason
    plain = route(req("write a haiku about queues"), book, 0.1)
    assert (plain.task_type, plain.model) == (None, "claude-sonnet-4-6")
    with pytest.raises(ValidationError, match="autocomplete, multi-file-edit, explain"):
        route(req("x", tags={"task_type": "poetry"}), book)


def test_a_prompt_too_long_for_the_rule_falls_to_the_next_rule() -> None:
    long = "Complete this " + "word " * 600
    r = route(req(long), {"coding": CODING}, 0.95)
    assert r.task_type is None and r.model == "gpt-4o-mini"


def test_capabilities_skip_rungs() -> None:
    tools = {"tools": [{"name": "grep", "description": "search",
                        "parameters": {"type": "object", "properties": {}}}]}
    ladder = {"coding": {"rungs": ["sluice-tiny-llama", "claude-haiku-4-5"], "target": 0.5}}
    plain = route(req(), ladder, 0.9)
    assert plain.model == "sluice-tiny-llama"
    with_tools = route(req(static=tools), ladder, 0.9)
    assert with_tools.model == "claude-haiku-4-5"
    assert "skipped sluice-tiny-llama lacks tools" in with_tools.reason
    # Context: a prompt the self-hosted model cannot hold climbs too.
    big = route(req("word " * 3000), ladder, 0.99)
    assert big.model == "claude-haiku-4-5" and "lacks context" in big.reason


def test_an_image_request_skips_a_rung_that_cannot_see_images() -> None:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    ladder = {"coding": {"rungs": ["sluice-tiny-llama", "gpt-4o-mini", "gpt-4o"],
                         "target": 0.5}}
    assert route(req(), ladder, 0.9).model == "sluice-tiny-llama"
    image = parse_request({"team": "t", "feature": "coding", "messages": [
        {"role": "user", "parts": [{"type": "text", "text": "What is in this picture?"},
                                   {"type": "image", "url": url}]}]})
    r = route(image, ladder, 0.9)
    # The self-hosted rung is blind: the next rung up that sees images, not the flagship.
    assert (r.model, r.rung) == ("gpt-4o-mini", 1)
    assert "skipped sluice-tiny-llama lacks messages" in r.reason


def test_named_tiers_map_onto_rungs() -> None:
    ladder = dict(CODING, task_types=[])
    book = {"coding": ladder}
    assert route(req(model="flagship"), book).model == "claude-sonnet-4-6"
    assert route(req(model="cheap"), book).model == "gpt-4o-mini"
    mapped = {"coding": dict(ladder, tiers={"cheap": "claude-haiku-4-5"})}
    assert route(req(model="cheap"), mapped).model == "claude-haiku-4-5"


def _prices(change: dict[str, dict[str, str]]) -> Any:
    import tomllib

    text = resources.files("models.data").joinpath("prices.toml").read_text("utf-8")
    data = tomllib.loads(text)
    for model, fields in change.items():
        data["models"][model].update(fields)
    return parse_catalogue(data)


def test_a_price_change_reorders_the_ladder() -> None:
    from ops.cli.ladders import priced_rungs

    ladder = {"coding": {"rungs": ["gpt-4o-mini", "claude-haiku-4-5"], "target": 0.5}}
    assert route(req(), ladder, 0.9).model == "gpt-4o-mini"
    dear = _prices({"gpt-4o-mini": {"input": "9.00", "cache_read": "4.50", "output": "30.00"}})
    # Now the stronger rung is also the cheaper one for this request: it serves.
    assert route(req(), ladder, 0.9, catalogue=dear).model == "claude-haiku-4-5"
    lad = ladder_from_dict("coding", ladder["coding"])
    assert [r["model"] for r in priced_rungs(lad, CAT, 1000, 256)] == ["gpt-4o-mini",
                                                                      "claude-haiku-4-5"]
    assert [r["model"] for r in priced_rungs(lad, dear, 1000, 256)] == ["claude-haiku-4-5",
                                                                       "gpt-4o-mini"]


def test_expected_output_tokens_decide_between_rungs_of_equal_quality() -> None:
    # Equal quality: the cheaper for the expected tokens wins. Output-heavy favours the model
    # with the cheaper output; input-heavy the one with the cheaper input.
    cat = _prices({"claude-haiku-4-5": {"input": "0.05", "output": "2.00"}})
    rungs = [{"model": "gpt-4o-mini", "quality": 1.0}, {"model": "claude-haiku-4-5",
                                                         "quality": 1.0}]
    short = ladder_from_dict("c", {"rungs": rungs, "expected_output_tokens": 1})
    long = ladder_from_dict("c", {"rungs": rungs, "expected_output_tokens": 4000})
    r = req("word " * 2000, max_tokens=4000)
    assert climb(short, r, cat, prompt_tokens=2000).model.name == "claude-haiku-4-5"
    assert climb(long, r, cat, prompt_tokens=2000).model.name == "gpt-4o-mini"


def test_the_reservation_covers_the_dearest_rung_the_request_can_reach() -> None:
    r = route(req("Complete this line: x ="), {"coding": CODING})
    assert r.model == "claude-haiku-4-5" and r.escalation == ("claude-sonnet-4-6",)
    prompt = prompt_count(req("Complete this line: x ="))
    amount = reach_worst_case(prompt, 512, reachable(CAT, {}, r.model, r.escalation))
    assert amount == worst_case_cost(prompt, 512, CAT.get("claude-sonnet-4-6"))
    assert amount > worst_case_cost(prompt, 512, CAT.get("claude-haiku-4-5"))
    calm = {"coding": dict(CODING, escalate=False)}
    assert route(req("Complete this line: x ="), calm).escalation == ()


def test_the_producer_reserves_for_the_escalation(tmp_path: Path) -> None:
    from models.domain.settings import Settings
    from queues.producer import Gateway

    held: list[Decimal] = []

    class Admission:
        def reserve(self, request: Any, route: Any, amount: Decimal, within: Any = None) -> str:
            held.append(amount)  # ``within`` is left to the producer's own fallback
            return "r1"

        def release(self, rid: str) -> None:
            pass

    settings = Settings(routing=RoutingSettings(ladders={"coding": CODING}))
    from scheduler.router.ladder_book import LadderBook as Book

    gw = Gateway(settings, admission=Admission(), ladders=Book.from_settings(settings.routing))
    handle = gw.submit(req("Complete this line: x =", max_tokens=64))
    assert handle.model == "claude-haiku-4-5"
    prompt = prompt_count(req("Complete this line: x =", max_tokens=64))
    assert held == [worst_case_cost(prompt, 64, CAT.get("claude-sonnet-4-6"))]


def test_bad_ladders_are_refused_with_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        ladder_from_dict("f", {"rungs": ["a"], "rung": "a"})
    with pytest.raises(ConfigError, match="must not decrease"):
        ladder_from_dict("f", {"rungs": [{"model": "a", "quality": 1}, {"model": "b",
                                                                        "quality": 0}]})
    with pytest.raises(ConfigError, match="does not compile"):
        ladder_from_dict("f", {"rungs": ["a"], "task_types": [
            {"name": "x", "when": {"prompt_regex": "("}}]})
    assert ladder_from_dict("f", CODING).to_dict() == ladder_from_dict(
        "f", ladder_from_dict("f", CODING).to_dict()).to_dict()


def test_the_ladders_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "ladders.json"
    path.write_text(json.dumps({"coding": {"rungs": ["gpt-4o-mini", "gpt-4o"]}}))
    book = LadderBook({"coding": CODING}, path, reload_s=0.0)
    assert [r.model for r in book.for_feature("coding").rungs] == ["gpt-4o-mini", "gpt-4o"]
    first = book.fingerprint("coding")
    write_ladders(path, {"coding": ladder_from_dict("coding", {"rungs": ["claude-haiku-4-5"]})})
    os.utime(path, ns=(1, 2))  # a distinct stamp even within the clock's resolution
    assert [r.model for r in book.for_feature("coding").rungs] == ["claude-haiku-4-5"]
    assert book.fingerprint("coding") != first
    path.write_text("{not json")
    os.utime(path, ns=(3, 4))
    # A bad edit keeps the ladders read last.
    assert [r.model for r in book.for_feature("coding").rungs] == ["claude-haiku-4-5"]
    path.unlink()
    assert book.for_feature("coding").rungs[0].model == "gpt-4o-mini"  # the settings' again


def test_the_cache_identity_follows_the_ladder_and_the_task_hint() -> None:
    book = LadderBook({"coding": CODING})
    plain = book.fingerprint("coding", req())
    assert plain.startswith("ladder:")
    assert book.fingerprint("coding", req(tags={"task_type": "explain"})) != plain
    assert LadderBook({"coding": dict(CODING, target=0.7)}).fingerprint("coding", req()) != plain
    assert book.fingerprint("other", req()) == ""


def test_a_trained_classifier_picks_task_types(tmp_path: Path) -> None:
    from scheduler.router.task_classifier import load_classifier, train

    prompts = [f"finish the statement number {i} =" for i in range(20)] + [
        f"tell me in words why loop {i} never ends" for i in range(20)]
    labels = ["autocomplete"] * 20 + ["explain"] * 20
    clf = load_classifier(train(prompts, labels).save(tmp_path / "tt.npz"))
    assert [p for p, _ in clf.predict(["finish the statement x =", "tell me in words why"])] \
        == ["autocomplete", "explain"]
    ladder = dict(CODING, task_types=[{"name": "autocomplete", "rung": "claude-haiku-4-5"},
                                      {"name": "explain", "rung": "gpt-4o-mini"}],
                  classifier=str(tmp_path / "tt.npz"))
    r = route(req("finish the statement total ="), {"coding": ladder})
    assert (r.task_type, r.model) == ("autocomplete", "claude-haiku-4-5")
    assert "classifier p=" in r.reason


def test_the_choice_is_the_cheapest_rung_meeting_the_target_or_else_the_strongest() -> None:
    from hypothesis import given, settings, strategies as st

    names = ["gpt-4o-mini", "claude-haiku-4-5", "gpt-4.1-mini", "gpt-4o", "claude-sonnet-4-6"]

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.floats(0, 1), min_size=2, max_size=5), st.floats(0, 1), st.floats(0, 1),
           st.integers(1, 3000))
    def check(qualities: list[float], s: float, target: float, out: int) -> None:
        qualities = sorted(qualities)
        rungs = [{"model": m, "quality": q} for m, q in zip(names, qualities)]
        ladder = ladder_from_dict("c", {"rungs": rungs, "target": target,
                                        "expected_output_tokens": out})
        r = req("some prompt", max_tokens=3000)
        got = climb(ladder, r, CAT, prompt_tokens=20,
                    score=lambda _req: (s, "fixed"))
        from scheduler.router.climb import options

        opts, _ = options(ladder.rungs, r, CAT, 20, out)
        good = [o for o in opts if s + (1 - s) * o.rung.quality >= target - 1e-12]
        if len({o.rung.quality for o in opts}) == 1:
            good = opts
        if target >= 1.0:
            good = []  # full quality asked (the floor's top): the strongest, whatever the score
        if good:
            assert got.model.name in {o.model.name for o in good}
            assert min(o.expected_cost for o in good) == next(
                o.expected_cost for o in opts if o.model.name == got.model.name)
        else:  # no rung meets it: the strongest (the cheapest of equally strong ones)
            top = max(o.rung.quality for o in opts)
            chosen = next(o for o in opts if o.model.name == got.model.name)
            assert chosen.rung.quality == top
            assert chosen.expected_cost == min(o.expected_cost for o in opts
                                               if o.rung.quality == top)
        # It climbs only to stronger rungs, and the reservation covers the dearest of them.
        strength = {o.model.name: o.rung.quality for o in opts}
        assert all(strength[m] > strength[got.model.name] for m in got.escalation)

    check()
