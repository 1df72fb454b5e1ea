"""Every figure of the spend report, read from the ledger in one place (and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models.db import spend

#: How many rows the top-spender tables and charts show.
TOP = 10


@dataclass
class ReportData:
    """The ledger's figures for one window; every number the report prints comes from here."""

    since: datetime | None
    until: datetime | None
    team: str | None
    generated_at: datetime
    total: spend.SpendLine
    bucket: str = "day"
    by_feature: list[spend.SpendLine] = field(default_factory=list)
    feature_over_time: list[spend.SpendLine] = field(default_factory=list)
    by_route: list[spend.SpendLine] = field(default_factory=list)
    by_outcome: list[spend.SpendLine] = field(default_factory=list)
    top_users: list[spend.SpendLine] = field(default_factory=list)
    top_teams: list[spend.SpendLine] = field(default_factory=list)

    def levers(self) -> dict[str, Decimal]:
        """What each lever saved over the window, and what was paid, against the baseline."""
        t = self.total
        return {"response cache": t.saved_by_response_cache, "routing": t.saved_by_routing,
                "prompt caching": t.saved_by_prompt_caching, "paid": t.cost}


def collect(session: Session, *, since: datetime | None = None, until: datetime | None = None,
            team: str | None = None, now: datetime | None = None) -> ReportData:
    """Query the ledger for everything the report shows."""
    window = {"since": since, "until": until, "team": team}
    totals = spend.spend_lines(session, **window)
    data = ReportData(since=since, until=until, team=team,
                      generated_at=now or datetime.now(timezone.utc), total=totals[0])
    days = spend.spend_lines(session, "day", **window)
    # A window of a day or two reads better by the hour than as one or two bars.
    data.bucket = "hour" if len(days) <= 2 else "day"
    data.feature_over_time = (spend.spend_lines(session, data.bucket, "feature", **window))
    data.by_feature = spend.spend_lines(session, "team", "feature", **window)
    data.by_route = spend.spend_lines(session, "tier", "model", **window)
    data.by_outcome = spend.spend_lines(session, "outcome", **window)
    data.top_users = spend.spend_lines(session, "user", **window)[:TOP]
    data.top_teams = spend.spend_lines(session, "team", **window)[:TOP]
    return data


def line_json(line: spend.SpendLine, names: list[str]) -> dict[str, Any]:
    """One spend line as JSON-safe values: money as exact decimal strings."""
    return dict(zip(names, line.key), requests=line.requests, cache_hits=line.cache_hits,
                cost=str(line.cost), baseline_cost=str(line.baseline_cost),
                list_cost=str(line.list_cost), saved=str(line.saved),
                saved_by_response_cache=str(line.saved_by_response_cache),
                saved_by_routing=str(line.saved_by_routing),
                saved_by_prompt_caching=str(line.saved_by_prompt_caching))


def report_json(data: ReportData) -> dict[str, Any]:
    """The report's figures as JSON (embedded in the HTML, and ``sluice report --json``)."""
    return {
        "since": data.since and data.since.isoformat(),
        "until": data.until and data.until.isoformat(),
        "team": data.team, "generated_at": data.generated_at.isoformat(),
        "total": line_json(data.total, []),
        "bucket": data.bucket,
        "by_feature": [line_json(x, ["team", "feature"]) for x in data.by_feature],
        "feature_over_time": [line_json(x, [data.bucket, "feature"])
                              for x in data.feature_over_time],
        "by_route": [line_json(x, ["tier", "model"]) for x in data.by_route],
        "by_outcome": [line_json(x, ["outcome"]) for x in data.by_outcome],
        "top_users": [line_json(x, ["user"]) for x in data.top_users],
        "top_teams": [line_json(x, ["team"]) for x in data.top_teams],
    }
