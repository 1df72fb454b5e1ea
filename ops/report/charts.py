"""PNG charts of the spend report (matplotlib, Agg backend); money turns into floats only here."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from ops.report.data import ReportData

#: Features drawn one by one over time; the rest are summed as "other".
MAX_SERIES = 6
_DPI = 110


def _pyplot() -> Any:
    # Imported on use: matplotlib is heavy, and the Agg backend must be chosen before pyplot.
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("charts need matplotlib: pip install matplotlib "
                           "(or the project's `router` extra)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _usd(value: Decimal) -> float:
    return float(value)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    _pyplot().close(fig)
    return path


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this window", ha="center", va="center",
            transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def spend_over_time(data: ReportData, path: Path) -> Path:
    """Stacked bars: spend per feature per day (or hour)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    buckets = sorted({line.key[0] for line in data.feature_over_time})
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in data.feature_over_time:
        totals[line.key[1]] += line.cost
    top = [f for f, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:MAX_SERIES]]
    series: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for line in data.feature_over_time:
        name = line.key[1] if line.key[1] in top else "other"
        series[name][line.key[0]] += line.cost
    if not buckets:
        _empty(ax, "spend")
    else:
        bottom = [0.0] * len(buckets)
        for name in top + (["other"] if "other" in series else []):
            values = [_usd(series[name].get(b, Decimal(0))) for b in buckets]
            ax.bar(buckets, values, bottom=bottom, label=name)
            bottom = [a + b for a, b in zip(bottom, values)]
        ax.set_ylabel("USD paid")
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_title(f"Spend per feature per {data.bucket} (UTC)")
    return _save(fig, path)


def savings_by_lever(data: ReportData, path: Path) -> Path:
    """One bar: the all-flagship baseline split into what was paid and what each lever saved."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 2.8))
    parts = data.levers()
    if not data.total.requests:
        _empty(ax, "requests")
    else:
        left = 0.0
        for (name, value), color in zip(parts.items(), ("#4c9f70", "#3b75af", "#e1a33b",
                                                        "#c0392b")):
            width = _usd(value)
            ax.barh(["baseline"], [width], left=left, label=f"{name}: ${width:,.4f}", color=color)
            left += width
        ax.set_xlabel("USD (all-flagship, no-cache baseline = whole bar)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4)
    ax.set_title("Savings per lever")
    return _save(fig, path)


def route_mix(data: ReportData, path: Path) -> Path:
    """Requests and spend per routed tier/model."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    lines = data.by_route
    if not lines:
        _empty(left, "requests")
        _empty(right, "spend")
    else:
        labels = [f"{line.key[0]}\n{line.key[1]}" for line in lines]
        left.bar(labels, [line.requests for line in lines], color="#3b75af")
        left.set_title("Requests per route")
        right.bar(labels, [_usd(line.cost) for line in lines], color="#c0392b")
        right.set_title("USD paid per route")
        for ax in (left, right):
            ax.tick_params(axis="x", labelsize=7)
    return _save(fig, path)


def cache_hit_rate(data: ReportData, path: Path) -> Path:
    """Response-cache hit rate per feature."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    lines = [line for line in data.by_feature if line.requests]
    if not lines:
        _empty(ax, "requests")
    else:
        labels = [line.key[1] for line in lines]
        rates = [line.cache_hits / line.requests * 100 for line in lines]
        bars = ax.bar(labels, rates, color="#4c9f70")
        ax.bar_label(bars, labels=[f"{r:.0f}%" for r in rates], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% answered from the cache")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    total = data.total
    rate = total.cache_hits / total.requests * 100 if total.requests else 0.0
    ax.set_title(f"Response-cache hit rate per feature (overall {rate:.1f}%)")
    return _save(fig, path)


def top_spenders(data: ReportData, path: Path) -> Path:
    """The users and teams that paid the most."""
    plt = _pyplot()
    fig, (users, teams) = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, lines, what in ((users, data.top_users, "users"), (teams, data.top_teams, "teams")):
        if not lines:
            _empty(ax, what)
            continue
        names = [("(none)" if line.key[0] == "None" else line.key[0]) for line in lines][::-1]
        ax.barh(names, [_usd(line.cost) for line in lines][::-1], color="#8e44ad")
        ax.set_title(f"Top {what} by USD paid")
        ax.tick_params(axis="both", labelsize=8)
    return _save(fig, path)


#: Chart file name -> (title, drawing function), in the order the report shows them.
CHARTS = {
    "spend_per_feature.png": ("Spend per feature over time", spend_over_time),
    "savings_per_lever.png": ("Savings per lever", savings_by_lever),
    "route_mix.png": ("Route mix", route_mix),
    "cache_hit_rate.png": ("Cache hit rate", cache_hit_rate),
    "top_spenders.png": ("Top spenders", top_spenders),
}


def draw_all(data: ReportData, folder: Path) -> dict[str, Path]:
    """Every chart as a PNG in ``folder``; file name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: draw(data, folder / name) for name, (_title, draw) in CHARTS.items()}
