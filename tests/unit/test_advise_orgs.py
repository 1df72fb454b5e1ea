"""The advisor and the cache stats read each org's features apart: feature names are each
org's own, so two orgs' ``search`` never add up, and ``--org`` reads one org only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import models.db.stored_text  # noqa: F401  (its table)
from models.db.engine import make_engine, session_factory
from models.db.tables import Base, LedgerRow
from models.domain.catalogue import load_catalogue
from ops.advise import advise

CAT = load_catalogue()
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def _row(i: int, org: str, cost: str) -> LedgerRow:
    spec = CAT.get("gpt-4o-mini")
    return LedgerRow(request_id=f"r{i}", org=org, created_at=NOW - timedelta(minutes=60 - i),
                     team="t", feature="search", lane="interactive", tier=spec.tier,
                     provider=spec.provider, model=spec.name, backend="api", outcome="ok",
                     input_uncached=100, output=10, cost=Decimal(cost),
                     baseline_cost=Decimal(cost), list_cost=Decimal(cost),
                     price_version=CAT.version, prompt_hash="same-prompt")


def _repeats(tmp_path: Path, **kw: Any) -> dict[tuple[str, str], Any]:
    engine = make_engine(f"sqlite:///{tmp_path}/{kw.get('org', 'all')}.db")
    Base.metadata.create_all(engine)
    with session_factory(engine)() as s:
        # acme asks the same prompt twice; globex once, the same text as acme's.
        s.add_all([_row(0, "acme", "0.010"), _row(1, "acme", "0.010"),
                   _row(2, "globex", "0.500")])
        s.commit()
        lines = [a for a in advise(s, CAT, since=NOW - timedelta(days=1), now=NOW, **kw)
                 if a.lever == "response-cache"]
    engine.dispose()
    return {(a.org, a.feature): a for a in lines}


def test_two_orgs_features_of_one_name_are_advised_apart(tmp_path: Path) -> None:
    lines = _repeats(tmp_path)
    # Read as one feature, globex's first ask counted as a repeat of acme's ($0.50).
    assert set(lines) == {("acme", "search")}
    assert lines[("acme", "search")].window_saving == Decimal("0.010")
    assert lines[("acme", "search")].as_json()["org"] == "acme"


def test_org_reads_one_orgs_features_only(tmp_path: Path) -> None:
    assert _repeats(tmp_path, org="globex") == {}
    assert set(_repeats(tmp_path, org="acme")) == {("acme", "search")}


def test_cache_stats_keep_each_orgs_feature_apart() -> None:
    from models.db.spend import SpendLine
    from ops.cli.cache import cache_stats_rows

    def line(org: str, outcome: str, n: int, cost: str) -> SpendLine:
        return SpendLine(key=(org, "search", outcome), requests=n, cache_hits=0,
                         cost=Decimal(cost), baseline_cost=Decimal("1"), input_tokens=0,
                         output_tokens=0)

    rows = cache_stats_rows([line("default", "ok", 2, "0.02"), line("default", "cache_hit", 2, "0"),
                             line("globex", "ok", 4, "4.00")])
    by = {r["feature"]: r for r in rows}
    assert set(by) == {"search", "globex/search"}
    assert (by["search"]["hits"], by["search"]["hit_rate"]) == (2, 0.5)
    # At its own org's mean paid price: read together, globex's dear answers priced the hits.
    assert by["search"]["avoided_spend"] == Decimal("0.02")
    assert by["globex/search"]["org"] == "globex" and by["globex/search"]["hits"] == 0


def test_embedding_item_stats_keep_each_orgs_feature_apart(tmp_path: Path) -> None:
    from models.db.embedding_stats import by_feature

    def row(i: int, org: str, outcome: str, items: int) -> LedgerRow:
        return LedgerRow(request_id=f"e{i}", org=org, created_at=NOW, team="t",
                         feature="search", lane="interactive", tier="embedding",
                         provider="openai", model="text-embedding-3-small", backend="api",
                         outcome=outcome, kind="embedding", items=items, input_uncached=10,
                         cost=Decimal("0.001"), baseline_cost=Decimal("0.001"),
                         list_cost=Decimal("0.001"), price_version=CAT.version)

    engine = make_engine(f"sqlite:///{tmp_path}/e.db")
    Base.metadata.create_all(engine)
    with session_factory(engine)() as s:
        s.add_all([row(0, "default", "ok", 4), row(1, "default", "cache_hit", 4),
                   row(2, "globex", "ok", 8)])
        s.commit()
        stats = {x.feature: x for x in by_feature(s)}
    engine.dispose()
    # Read together, globex's 8 items were this org's: 16 items, a quarter cached.
    assert {f: (x.items, x.cached) for f, x in stats.items()} == {
        "search": (8, 4), "globex/search": (8, 0)}
    assert stats["globex/search"].as_json()["org"] == "globex"
