"""The quality guard on ladders: the adjacent rung shadows, a move is the ladder's target (read
by the route and the cache key), and judged pairs are tabled per task type and rung."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from models.domain.catalogue import load_catalogue
from models.domain.request import parse_request
from models.domain.settings import RoutingSettings, load_settings
from scheduler.route import decide_route
from scheduler.router.ladder import ladder_from_dict
from scheduler.router.ladder_book import LadderBook
from scheduler.router.rung_shadow import rung_shadow

CAT = load_catalogue()
THREE = {"rungs": ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-6"], "target": 0.5}


class Moves:
    """The quality floor's move book, as the route and the cache read it."""

    def __init__(self, moved: dict[tuple[str, str], float] | None = None) -> None:
        self.moved = dict(moved or {})

    def thresholds(self) -> dict[tuple[str, str], float]:
        return self.moved


class Scorer:
    """A fixed score, with the moves a RouterSet carries."""

    name = "fixed"

    def __init__(self, score: float, moves: Moves | None = None) -> None:
        self.value, self.moves = score, moves

    def score(self, request: Any) -> float:
        return self.value


def req(text: str = "hello", **extra: Any) -> Any:
    return parse_request({"team": "t", "feature": "coding", "request_id": extra.pop("rid", "r1"),
                          "messages": [{"role": "user", "content": text}], **extra})


def route(request: Any, ladder: dict[str, Any], score: float, moves: Moves | None = None) -> Any:
    return decide_route(request, CAT, RoutingSettings(), scorer=Scorer(score, moves),
                        ladders=LadderBook({"coding": ladder}))


def shadow_of(request: Any, ladder: dict[str, Any], score: float, up: float = 1.0,
              down: float = 0.0) -> Any:
    served = route(request, ladder, score)
    return served, rung_shadow(ladder_from_dict("coding", ladder), served, request, CAT, 50,
                               up_share=up, down_share=down)


def test_a_cheap_rung_is_shadowed_by_the_next_rung_up_not_the_global_flagship() -> None:
    served, shadow = shadow_of(req(), THREE, 0.9)
    assert (served.model, served.rung) == ("gpt-4o-mini", 0)
    assert (shadow.model, shadow.rung, shadow.direction) == ("claude-haiku-4-5", 1, "up")
    middle, shadow = shadow_of(req(), THREE, 0.4)
    assert (middle.rung, shadow.model, shadow.rung) == (1, "claude-sonnet-4-6", 2)


def test_the_top_rung_is_shadowed_one_rung_down_only_in_its_sampled_share() -> None:
    high = dict(THREE, target=0.9)
    served, shadow = shadow_of(req(), high, 0.1, down=1.0)
    assert served.rung == 2
    assert (shadow.model, shadow.rung, shadow.direction) == ("claude-haiku-4-5", 1, "down")
    assert shadow_of(req(), high, 0.1, down=0.0)[1] is None
    # Sampled: a share of the top rung's answers, decided by the request id.
    sent = [shadow_of(req(rid=f"r{i}"), high, 0.1, down=0.3)[1] for i in range(200)]
    assert 30 < sum(x is not None for x in sent) < 90
    assert shadow_of(req(), high, 0.95, up=0.0, down=1.0)[1] is None  # rung 0: none below


def test_a_fallback_answer_or_a_rung_that_cannot_serve_is_not_the_shadow() -> None:
    served = route(req(), THREE, 0.9)
    fallback = served.model_copy(update={"rung": None, "model": "gpt-4o"})
    assert rung_shadow(ladder_from_dict("coding", THREE), fallback, req(), CAT, 50,
                       up_share=1.0, down_share=1.0) is None
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    image = parse_request({"team": "t", "feature": "coding", "request_id": "img", "messages": [
        {"role": "user", "parts": [{"type": "text", "text": "What is this?"},
                                   {"type": "image", "url": url}]}]})
    blind = {"rungs": ["gpt-4o-mini", "sluice-tiny-llama", "gpt-4o"], "target": 0.5}
    served, shadow = shadow_of(image, blind, 0.9)
    # The self-hosted rung cannot see the image: the shadow goes past it.
    assert (served.rung, shadow.model, shadow.rung) == (0, "gpt-4o", 2)


def test_a_task_types_own_ladder_gives_the_rungs_and_the_shadow() -> None:
    ladder = dict(THREE, task_types=[{"name": "explain", "rungs": ["gpt-4.1-mini", "gpt-4.1"],
                                      "when": {"prompt_regex": "(?i)^explain"}}])
    served, shadow = shadow_of(req("Explain this loop"), ladder, 0.9)
    assert (served.model, served.task_type, served.rung) == ("gpt-4.1-mini", "explain", 0)
    assert (shadow.model, shadow.rung) == ("gpt-4.1", 1)


def test_a_move_is_the_ladders_target_and_shifts_task_types_own_targets() -> None:
    ladder = ladder_from_dict("coding", dict(THREE, task_types=[
        {"name": "explain", "target": 0.3}, {"name": "edit"}]))
    moved = ladder.moved(0.9)
    assert moved.target == 0.9
    assert abs(moved.task("explain").target - 0.7) < 1e-9 and moved.task("edit").target is None
    assert ladder.moved(5.0).target == 1.0 and ladder.moved(0.5) is ladder
    assert ladder.target == 0.5  # the configured ladder is untouched: a revert is the config


def test_the_ladder_route_reads_the_floors_move_and_the_strongest_at_full_target() -> None:
    assert route(req(), THREE, 0.9).rung == 0
    moves = Moves({("default", "coding"): 1.0})
    moved = route(req(), THREE, 0.9, moves)
    assert (moved.model, moved.rung) == ("claude-sonnet-4-6", 2)
    # A certain router does not beat a full target (as the all-flagship threshold).
    assert route(req(), THREE, 1.0, moves).rung == 2
    assert route(req(), THREE, 0.9, Moves({("default", "other"): 1.0})).rung == 0
    # Another org's ladder of the same feature name moved: this org's is as configured.
    assert route(req(), THREE, 0.9, Moves({("other-org", "coding"): 1.0})).rung == 0
    assert route(req(org="other-org"), THREE, 0.9, moves).rung == 0
    assert route(req(), THREE, 0.7, Moves({("default", "coding"): 0.8})).rung == 1


def test_a_ladder_move_changes_the_cache_key_of_auto() -> None:
    from queues.memory_cache import MemoryResponseCache

    settings = load_settings({"SLUICE_ROUTING__LADDERS": json.dumps({"coding": THREE})})
    cache = MemoryResponseCache(settings)
    moves = Moves()
    cache.moves = moves
    before = cache.key(req()).id
    moves.moved = {("default", "coding"): 1.0}
    # Rung 0's answers cached before the ladder's target moved must not answer after it.
    assert cache.key(req()).id != before


def _db(tmp_path: Path, ladders: dict[str, Any]) -> tuple[Any, Any]:
    from models.db.engine import make_engine, session_factory
    from ops.db import upgrade

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    guard = {"floor": 0.6, "min_pairs": 8, "step": 1.0, "shadow_cheap": 1.0}
    settings = load_settings({"SLUICE_DATABASE__URL": url,
                              "SLUICE_ROUTING__LADDERS": json.dumps(ladders),
                              "SLUICE_QUALITY__FEATURES": json.dumps(
                                  {"coding": guard, "plain": guard})})
    return settings, session_factory(make_engine(url))


def _judge(s: Any, i: int, feature: str, served: int | None, shadow: int | None,
           agree: bool, tier: str = "cheap") -> None:
    from models.db import quality as repo

    assert repo.open_judgement(s, {
        "request_id": f"{feature}-{i}", "org": "default", "team": "t", "feature": feature,
        "served_tier": tier, "served_model": "a", "shadow_model": "b", "judge": "exact",
        "agree": agree, "served_cost": Decimal("0.001"), "shadow_cost": Decimal("0.004"),
        "task_type": "explain" if served is not None else None, "served_rung": served,
        "shadow_rung": shadow, "created_at": datetime.now(timezone.utc)})


def test_the_quality_table_is_per_task_type_and_rung_and_saves_only_upward(
        tmp_path: Path) -> None:
    from ops.quality import quality_rows

    settings, sessions = _db(tmp_path, {"coding": THREE})
    with sessions() as s:
        for i in range(4):
            _judge(s, i, "coding", 0, 1, agree=i < 3)
        for i in range(4, 6):  # Haiku (a cheap-tier model) shadowed one rung down: no saving
            _judge(s, i, "coding", 1, 0, agree=False, tier="cheap")
        _judge(s, 9, "plain", None, None, agree=False)
        s.commit()
        rows = {(r.feature, r.task_type, r.rung): r for r in quality_rows(s, settings)}
    assert {r.org for r in rows.values()} == {"default"}
    low = rows[("coding", "explain", 0)]
    assert (low.judged, low.agree, low.saved, low.saved_on_disagreement) == (
        4, 3, Decimal("0.012"), Decimal("0.003"))
    down = rows[("coding", "explain", 1)]
    assert (down.judged, down.saved, down.saved_on_disagreement) == (2, Decimal(0), Decimal(0))
    assert down.as_json()["rung"] == 1 and down.as_json()["task_type"] == "explain"
    plain = rows[("plain", None, None)]
    assert plain.saved == Decimal("0.003") == plain.saved_on_disagreement


def test_a_floor_breach_on_a_ladder_feature_moves_its_target_audited(tmp_path: Path) -> None:
    from models.db import audit
    from models.db import quality as repo
    from scheduler.quality_floor import MoveBook, evaluate, revert

    settings, sessions = _db(tmp_path, {"coding": dict(THREE, target=0.3)})
    with sessions() as s:
        for i in range(10):
            _judge(s, i, "coding", 0, 1, agree=False)
        move = evaluate(s, settings, "default", "coding")
        s.commit()
        assert move is not None and (move.before, move.after) == (0.3, 1.0)
        assert move.reason.startswith("ladder target")
        (entry,) = audit.list_actions(s, action="routing.move")
        assert entry.detail["ladder"] is True and entry.target == "default/coding"
    book = MoveBook(sessions, ttl_s=0.0)
    assert route(req(), dict(THREE, target=0.3), 0.9, book).rung == 2
    with sessions() as s:
        revert(s, "coding", actor="ops", reason="test")
        s.commit()
        assert repo.last_move(s, "default", "coding").after == 0.3
    assert route(req(), dict(THREE, target=0.3), 0.9, book).rung == 0
