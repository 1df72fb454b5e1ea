"""Front-door refusals summed across processes in Redis, and exposed by `sluice metrics`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from models.db.engine import make_engine, session_factory
from ops.metrics import build_registry
from queues.shed_tally import ShedTally, read_tally

pytestmark = pytest.mark.integration


def test_two_doors_add_only_what_is_new_and_metrics_expose_the_sum(redis_db_url: str,
                                                                   tmp_path: Path) -> None:
    from ops.db import upgrade

    client = redis.Redis.from_url(redis_db_url)
    prefix = f"sgshed{uuid.uuid4().hex[:6]}:"
    a, b = ShedTally(client, prefix), ShedTally(client, prefix)
    try:
        assert a.flush(5) == 5 and a.flush(5) == 0, "a flush adds only what is new"
        assert a.flush(7) == 2 and b.flush(3) == 3
        assert read_tally(client, prefix) == {"interactive": 10}
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        engine = make_engine(url)
        registry = build_registry(session_factory(engine), cache_s=0,
                                  shed=lambda: read_tally(client, prefix))
        samples: dict[str, Any] = {s.name: s for fam in text_string_to_metric_families(
            generate_latest(registry).decode()) for s in fam.samples}
        engine.dispose()
        assert samples["sluice_frontdoor_shed_total"].value == 10
        assert samples["sluice_frontdoor_shed_total"].labels == {"lane": "interactive"}
    finally:
        client.delete(prefix + "sluice:shed")
        client.close()
