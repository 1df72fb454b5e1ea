"""The stable-prefix lever's arithmetic on a small ledger: what each request reads once the
volatile content leaves its prefix, per provider, and only within the cache's lifetime."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import models.db.stored_text  # noqa: F401  (its table)
from models.db.engine import make_engine, session_factory
from models.db.stored_text import StoredTextRow
from models.db.tables import Base, LedgerRow
from models.domain.catalogue import load_catalogue
from models.domain.cost import cost_of
from models.domain.tokens import count_text
from models.domain.usage import Usage
from ops.advise import advise

CAT = load_catalogue()
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
RULES = " ".join(f"Rule {i}: describe the item plainly." for i in range(150))


def _row(i: int, model: str, minute: int, usage: Usage, feature: str = "desc") -> LedgerRow:
    spec = CAT.get(model)
    cost = cost_of(usage, spec)
    return LedgerRow(request_id=f"r{i}", created_at=NOW - timedelta(hours=1, minutes=-minute),
                     team="t", feature=feature, lane="interactive", tier=spec.tier,
                     provider=spec.provider, model=model, backend="api", outcome="ok",
                     input_uncached=usage.input_uncached, cache_write_5m=usage.cache_write_5m,
                     output=usage.output, cost=cost, baseline_cost=cost, list_cost=cost,
                     price_version=CAT.version, volatile_prefix=True)


def _advise(tmp_path: Path, rows: list[LedgerRow], prompts: dict[str, str] | None = None
            ) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{tmp_path}/l.db")
    Base.metadata.create_all(engine)
    with session_factory(engine)() as s:
        s.add_all(rows)
        s.add_all([StoredTextRow(request_id=rid, created_at=NOW - timedelta(hours=1),
                                 expires_at=NOW + timedelta(days=30), team="t", feature="desc",
                                 prompt=p, answer="...") for rid, p in (prompts or {}).items()])
        s.commit()
        lines = [a for a in advise(s, CAT, since=NOW - timedelta(days=1), now=NOW)
                 if a.lever == "stable-prefix"]
    engine.dispose()
    return {a.feature: a for a in lines}


def test_anthropic_reads_what_it_wrote_each_time_except_the_first_of_a_run(
        tmp_path: Path) -> None:
    spec = CAT.get("claude-sonnet-4-5")
    paid = Usage(input_uncached=60, cache_write_5m=1500, output=8)
    # Minutes 0, 1, 2, then 20: the last comes after the 5-minute cache has expired.
    rows = [_row(i, spec.name, m, paid) for i, m in enumerate((0, 1, 2, 20))]
    line = _advise(tmp_path, rows)["desc"]
    read = cost_of(Usage(input_uncached=60, cache_read=1500, output=8), spec)
    assert line.window_saving == 2 * (cost_of(paid, spec) - read)
    assert "4 requests" in line.action and "upper bound" not in line.assumption


def test_openai_reads_the_system_prompt_without_its_stamp_in_cacheable_steps(
        tmp_path: Path) -> None:
    spec = CAT.get("gpt-4.1")
    prefix = 4 + count_text(RULES + " Generated at  for request .")
    assert 1024 + 128 < prefix and (prefix - 1024) % 128 > 8  # not at a step's edge
    steps = 1024 + (prefix - 1024) // 128 * 128
    prompts, rows = {}, []
    for i in range(3):
        prompt = (f"system: {RULES} Generated at 2026-12-02T10:0{i}:00Z for request "
                  f"req-{i}a1b2c3d.\nuser: Describe item {i}.")
        prompts[f"r{i}"] = prompt
        rows.append(_row(i, spec.name, i, Usage(input_uncached=prefix + 40, output=8)))
    line = _advise(tmp_path, rows, prompts)["desc"]
    read = Usage(input_uncached=prefix + 40 - steps, cache_read=steps, output=8)
    assert line.window_saving == 2 * (cost_of(Usage(input_uncached=prefix + 40, output=8), spec)
                                      - cost_of(read, spec))
    assert "upper bound" not in line.assumption


def test_openai_without_its_text_is_an_upper_bound_that_says_so(tmp_path: Path) -> None:
    spec = CAT.get("gpt-4o-mini")
    paid = Usage(input_uncached=2000, output=300)
    line = _advise(tmp_path, [_row(i, spec.name, i, paid) for i in range(2)])["desc"]
    # The whole prompt as prefix: 1,920 of its 2,000 tokens in 128-token steps.
    assert line.window_saving == cost_of(paid, spec) - cost_of(
        Usage(input_uncached=80, cache_read=1920, output=300), spec)
    assert "upper bound for 1 OpenAI requests" in line.assumption


def test_providers_without_a_prefix_cache_we_use_get_no_line(tmp_path: Path) -> None:
    paid = Usage(input_uncached=2000, output=300)
    assert _advise(tmp_path, [_row(i, "gemini-2.5-flash", i, paid) for i in range(3)]) == {}
