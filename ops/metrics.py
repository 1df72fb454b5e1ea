"""Prometheus metrics read at scrape time from the ledger, the budget tables and the broker.

Nothing registers at import: :func:`build_registry` makes a fresh ``CollectorRegistry`` holding
one :class:`SluiceCollector`. Counters are all-time sums over the ledger (Prometheus takes
rates of them); money is Decimal up to the exposition, where Prometheus only has floats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

#: Latency histogram bounds in milliseconds (interactive answers to long async articles).
LATENCY_BOUNDS_MS = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                     30000.0, 60000.0, 120000.0)
LEVERS = ("response_cache", "routing", "prompt_caching")


@dataclass
class Snapshot:
    """Everything one scrape reports, read in one pass."""

    routes: list[Any] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)
    latency: dict[str, tuple[list[int], int, float]] = field(default_factory=dict)
    budgets: list[Any] | None = None
    pauses: dict[str, list[str]] | None = None
    depths: dict[str, int | None] = field(default_factory=dict)
    #: Requests the front doors refused as overloaded, per lane (None: not read).
    shed: dict[str, int] | None = None
    up: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0
    #: ops.quality rows (judged agreement per feature and tier); None: not read.
    quality: list[Any] | None = None


class SluiceCollector(Collector):
    """Reads the ledger (and budgets, and the broker) when Prometheus scrapes.

    A snapshot is reused for ``cache_s`` seconds, so several scrapers (or a fast one) cost one
    set of aggregate queries, not one per request.
    """

    def __init__(self, sessions: Callable[[], Any], *, app: Any = None,
                 cache_s: float = 5.0, shed: Callable[[], dict[str, int]] | None = None,
                 limiter: Any = None) -> None:
        self.sessions = sessions
        #: The rate limiter (scheduler.ratelimit), for headroom and refusals; None: none.
        self.limiter = limiter
        self.app = app
        self.shed = shed
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._taken = 0.0

    def snapshot(self) -> Snapshot:
        """The current figures, read again when the cached ones are older than ``cache_s``."""
        with self._lock:
            if self._snap is None or time.monotonic() - self._taken >= self.cache_s:
                self._snap = read_snapshot(self.sessions, self.app, self.shed)
                self._taken = time.monotonic()
            return self._snap

    def collect(self) -> Iterator[Any]:
        """Metric families for one scrape."""
        snap = self.snapshot()
        yield from _request_families(snap)
        yield from _money_families(snap)
        yield from _latency_families(snap)
        yield from _budget_families(snap)
        yield from _queue_families(snap)
        yield from _quality_families(snap)
        if self.limiter is not None:
            from ops.rate_metrics import rate_families

            yield from rate_families(self.limiter)
        up = GaugeMetricFamily("sluice_metrics_source_up", "1 when the source answered the "
                               "last scrape", labels=["source"])
        for source, ok in sorted(snap.up.items()):
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        yield GaugeMetricFamily("sluice_metrics_scrape_seconds", "Seconds the last read of the "
                                "ledger and broker took", value=snap.seconds)


def read_snapshot(sessions: Callable[[], Any], app: Any = None,
                  shed: Callable[[], dict[str, int]] | None = None) -> Snapshot:
    """Query the ledger, budgets and broker; a source that fails is reported down, not raised."""
    from sqlalchemy.exc import SQLAlchemyError

    from models.db import spend

    began = time.perf_counter()
    snap = Snapshot()
    try:
        with sessions() as s:
            snap.routes = spend.spend_lines(s, "lane", "tier", "model", "outcome")
            # The org is part of a team's and a feature's identity: team "catalog" of two orgs
            # is two series, as the budgets' are.
            snap.features = spend.spend_lines(s, "org", "team", "feature")
            snap.latency = spend.latency_histogram(s, LATENCY_BOUNDS_MS)
        snap.up["ledger"] = True
    except SQLAlchemyError:
        snap.up["ledger"] = False
    snap.budgets, snap.pauses, snap.up["budgets"] = _read_budgets(sessions)
    snap.quality, snap.up["quality"] = _read_quality(sessions)
    if app is not None:
        snap.depths, snap.up["broker"] = read_depths(app)
    if shed is not None:
        try:
            snap.shed = shed()
        except Exception:  # noqa: BLE001 - reported as a source that is down
            snap.up["shed_tally"] = False
        else:
            snap.up["shed_tally"] = True
    snap.seconds = time.perf_counter() - began
    return snap


def _read_quality(sessions: Callable[[], Any]) -> tuple[list[Any] | None, bool]:
    from sqlalchemy.exc import SQLAlchemyError

    from models.domain.settings import load_settings
    from ops.quality import quality_rows

    try:
        with sessions() as s:
            return quality_rows(s, load_settings()), True
    except SQLAlchemyError:
        return None, False


def _quality_families(snap: Snapshot) -> Iterator[Any]:
    """Judged pairs, agreement and its lower bound per org, feature and served tier (an org's
    feature is its own: another org's of the same name is another series)."""
    if not snap.quality:
        return
    labels = ["org", "feature", "tier"]
    judged = CounterMetricFamily("sluice_quality_judged_pairs", "Shadow pairs judged",
                                 labels=labels)
    agree = GaugeMetricFamily("sluice_quality_agreement", "Share of judged pairs that agreed",
                              labels=labels)
    low = GaugeMetricFamily("sluice_quality_agreement_lower_bound", "Lower bound of the "
                            "agreement's Wilson interval (the floor compares it)", labels=labels)
    saved = CounterMetricFamily("sluice_quality_saved_usd", "USD routing saved on judged "
                                "pairs", labels=labels)
    rung_labels = ["org", "feature", "task_type", "rung", "tier"]
    rung_judged = CounterMetricFamily("sluice_quality_rung_judged_pairs", "Shadow pairs "
                                      "judged per ladder rung", labels=rung_labels)
    rung_low = GaugeMetricFamily("sluice_quality_rung_agreement_lower_bound", "Lower bound of "
                                 "a ladder rung's agreement interval", labels=rung_labels)
    for r in snap.quality:
        if r.rung is not None:  # a ladder's rows: labels of their own, no duplicate series
            key = [r.org, r.feature, r.task_type or "", str(r.rung), r.tier]
            rung_judged.add_metric(key, float(r.judged))
            rung_low.add_metric(key, r.low)
            continue
        key = [r.org, r.feature, r.tier]
        judged.add_metric(key, float(r.judged))
        agree.add_metric(key, r.agreement)
        low.add_metric(key, r.low)
        saved.add_metric(key, float(r.saved))
    yield from (judged, agree, low, saved, rung_judged, rung_low)


def read_depths(app: Any) -> tuple[dict[str, int | None], bool]:
    """Messages waiting per queue, and whether the broker answered at all."""
    from queues.names import QUEUES

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            depths: dict[str, int | None] = {}
            for queue in QUEUES:
                # A channel per queue: on AMQP a failed passive declare closes its channel.
                channel = conn.channel()
                try:
                    depths[queue] = int(channel.queue_declare(queue=queue,
                                                              passive=True).message_count)
                except Exception:  # noqa: BLE001 - see below
                    # Redis drops the key of an emptied list, and a queue nobody declared yet
                    # does not exist: either way nothing is waiting in it.
                    depths[queue] = 0
                finally:
                    channel.close()
            return depths, True
    except Exception:  # noqa: BLE001 - a broker that cannot be reached is reported down
        return {q: None for q in QUEUES}, False


def _read_budgets(sessions: Callable[[], Any]) -> tuple[list[Any] | None,
                                                        dict[str, list[str]] | None, bool]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        from models.db.budgets import list_budgets
        from scheduler.governor import paused_queues
    except ImportError:  # this build has no budget lever
        return None, None, False
    try:
        with sessions() as s:
            return list_budgets(s), paused_queues(s), True
    except SQLAlchemyError:  # budget tables not migrated yet
        return None, None, False


def _request_families(snap: Snapshot) -> Iterator[Any]:
    reqs = CounterMetricFamily("sluice_requests", "Requests by lane, routed tier, model and "
                               "outcome (ok, cache_hit, error, running)",
                               labels=["lane", "tier", "model", "outcome"])
    for line in snap.routes:
        reqs.add_metric(list(line.key), line.requests)
    yield reqs
    feat = CounterMetricFamily("sluice_feature_requests", "Requests per org, team and feature",
                               labels=["org", "team", "feature"])
    hits = CounterMetricFamily("sluice_cache_hits", "Requests answered from the response "
                               "cache", labels=["org", "team", "feature"])
    ratio = GaugeMetricFamily("sluice_cache_hit_ratio", "Share of requests answered from the "
                              "response cache, all time", labels=["org", "team", "feature"])
    tokens = CounterMetricFamily("sluice_tokens", "Tokens billed, by kind (input includes "
                                 "cache reads)", labels=["org", "team", "feature", "kind"])
    for line in snap.features:
        feat.add_metric(list(line.key), line.requests)
        hits.add_metric(list(line.key), line.cache_hits)
        ratio.add_metric(list(line.key), line.cache_hits / line.requests if line.requests
                         else 0.0)
        for kind, value in (("input", line.input_tokens), ("output", line.output_tokens),
                            ("cache_read", line.cache_read_tokens)):
            tokens.add_metric([*line.key, kind], value)
    yield from (feat, hits, ratio, tokens)


def _money_families(snap: Snapshot) -> Iterator[Any]:
    cost = CounterMetricFamily("sluice_cost_usd", "USD paid", labels=["org", "team", "feature"])
    base = CounterMetricFamily("sluice_baseline_cost_usd", "USD the same requests would have "
                               "cost all-flagship with no cache", labels=["org", "team", "feature"])
    saved = CounterMetricFamily("sluice_saved_usd", "USD saved against the baseline, per lever",
                                labels=["org", "team", "feature", "lever"])
    for line in snap.features:
        cost.add_metric(list(line.key), float(line.cost))
        base.add_metric(list(line.key), float(line.baseline_cost))
        for lever, value in zip(LEVERS, (line.saved_by_response_cache, line.saved_by_routing,
                                         line.saved_by_prompt_caching)):
            saved.add_metric([*line.key, lever], float(value))
    yield from (cost, base, saved)


def _latency_families(snap: Snapshot) -> Iterator[Any]:
    hist = HistogramMetricFamily("sluice_request_latency_ms", "End-to-end latency of requests "
                                 "a worker answered (enqueue to result), milliseconds",
                                 labels=["lane"])
    for lane, (cumulative, count, total) in sorted(snap.latency.items()):
        buckets = [(_le(b), c) for b, c in zip(LATENCY_BOUNDS_MS, cumulative)]
        hist.add_metric([lane], buckets + [("+Inf", count)], sum_value=total)
    yield hist


def _le(bound: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # "50.0", as every Prometheus client library writes it


def _budget_families(snap: Snapshot) -> Iterator[Any]:
    if snap.budgets is None:
        return
    # The org is part of a budget's identity: team "catalog" of two orgs is two series.
    labels = ["org", "scope", "key", "window"]
    fams = {name: GaugeMetricFamily(f"sluice_budget_{name}_usd", text, labels=labels)
            for name, text in (("limit", "Hard limit"), ("spent", "Settled spend this window"),
                               ("reserved", "Held by open reservations"),
                               ("remaining", "Hard limit minus spent and reserved"))}
    for b in snap.budgets:
        key = [b.org, b.scope, b.key, b.window]
        fams["limit"].add_metric(key, float(b.hard_limit))
        fams["spent"].add_metric(key, float(b.spent))
        fams["reserved"].add_metric(key, float(b.reserved))
        fams["remaining"].add_metric(key, float(b.hard_limit - b.spent - b.reserved))
    yield from fams.values()


def _queue_families(snap: Snapshot) -> Iterator[Any]:
    from queues.names import QUEUES

    depth = GaugeMetricFamily("sluice_queue_depth", "Messages waiting in each queue",
                              labels=["queue"])
    for queue, n in sorted(snap.depths.items()):
        if n is not None:
            depth.add_metric([queue], n)
    yield depth
    if snap.pauses is not None:
        paused = GaugeMetricFamily("sluice_queue_paused", "1 while a queue is paused (budget or "
                                   "operator)", labels=["queue"])
        for queue in QUEUES:
            paused.add_metric([queue], 1.0 if snap.pauses.get(queue) else 0.0)
        yield paused
    if snap.shed is not None:
        shed = CounterMetricFamily("sluice_frontdoor_shed", "Requests the front doors refused "
                                   "as overloaded (503) before queueing them", labels=["lane"])
        for lane, n in sorted(snap.shed.items()):
            shed.add_metric([lane], n)
        yield shed


def build_registry(sessions: Callable[[], Any], *, app: Any = None,
                   cache_s: float = 5.0, shed: Callable[[], dict[str, int]] | None = None,
                   limiter: Any = None) -> CollectorRegistry:
    """A fresh registry holding one collector over ``sessions`` (and the broker of ``app``,
    the front doors' refusal tally read by ``shed``, and the rate limits of ``limiter``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SluiceCollector(sessions, app=app, cache_s=cache_s, shed=shed,
                                      limiter=limiter))
    return registry


def registry_for(settings: Any, *, cache_s: float = 5.0) -> CollectorRegistry:
    """The registry of an installation: its ledger and its broker, from ``settings``."""
    from queues.app import create_app
    from queues.wiring import ledger_sessions

    from queues.shed_tally import tally_for

    from scheduler.ratelimit import build_rate_limiter

    tally = tally_for(settings)
    sessions = ledger_sessions(settings)
    return build_registry(sessions, app=create_app(settings), cache_s=cache_s,
                          shed=tally.read if tally is not None else None,
                          limiter=build_rate_limiter(settings, sessions))
