"""Prometheus families of the rate limits: each limit's window, its headroom now, and the
refusals by limit (counted by the admission script itself, in Redis, for every process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from models.domain.ratelimit import Charge


def rate_families(limiter: Any) -> Iterator[Any]:
    """``sluice_ratelimit_{limit,remaining}`` per limit and kind (keys, teams, and every other
    scope), and ``sluice_ratelimit_refusals_total`` by limit; nothing when Redis is down."""
    labels = ["org", "scope", "key", "kind", "window_s"]
    limit = GaugeMetricFamily("sluice_ratelimit_limit", "Requests or tokens a window admits",
                              labels=labels)
    left = GaugeMetricFamily("sluice_ratelimit_remaining", "What the current window still "
                             "admits (headroom)", labels=labels)
    refusals = CounterMetricFamily("sluice_ratelimit_refusals", "Admissions refused, by the "
                                   "limit that refused", labels=["limit", "kind"])
    try:
        index = limiter.limits()
        for limits in index.values():
            for lim in limits:
                for kind, cap in (("requests", lim.rpm), ("tokens", lim.tpm)):
                    if cap is None:
                        continue
                    used = limiter.used(Charge(lim.name, kind, cap, 0, lim.window_s, lim.org))
                    tags = [lim.org, lim.scope, lim.key, kind, str(lim.window_s)]
                    limit.add_metric(tags, cap)
                    left.add_metric(tags, max(cap - used, 0))
        for name, n in sorted(limiter.refusal_counts().items()):
            scope_key, _, kind = name.rpartition(":")
            refusals.add_metric([scope_key, kind], n)
    except Exception:  # noqa: BLE001 - a scrape reports what it can; Redis down shows as gaps
        return
    yield limit
    yield left
    yield refusals
