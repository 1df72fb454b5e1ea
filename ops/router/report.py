"""Eval output: a rich table, a markdown table, a PNG of quality against strong-call share, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ops.router.evaluation import RouterResult
from ops.router.published import PUBLISHED, SOURCES

COLUMNS = (("apgr", "APGR"), ("cpt50", "CPT(50%)"), ("cpt80", "CPT(80%)"),
           ("share_for_95pct_strong", "strong share for 95%"), ("quality_at_50pct", "quality @50%"))


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if key == "apgr":
        return f"{value:.3f}"
    return f"{100 * value:.1f}%"


def rows(results: Sequence[RouterResult], published: bool = True) -> list[list[str]]:
    """Table rows: dataset, router, n, then the metric columns; RouteLLM's figures after ours."""
    out = []
    seen: list[str] = []
    for r in results:
        if r.dataset not in seen:
            seen.append(r.dataset)
        metrics = [_fmt(k, r.summary.get(k)) for k, _ in COLUMNS]
        out.append([r.dataset, r.router, str(r.n), *metrics])
    if published:
        for dataset in seen:
            for p in PUBLISHED.get(dataset, []):
                out.append([dataset, f"{p['router']} [{p['source']}]", "—"]
                           + [_fmt(k, p.get(k)) for k, _ in COLUMNS])
    return out


def header() -> list[str]:
    """Column titles of :func:`rows`."""
    return ["dataset", "router", "n"] + [title for _, title in COLUMNS]


def markdown(results: Sequence[RouterResult], published: bool = True) -> str:
    """A GitHub markdown table of :func:`rows`."""
    lines = ["| " + " | ".join(header()) + " |", "|" + "---|" * len(header())]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results, published)]
    return "\n".join(lines)


def rich_table(results: Sequence[RouterResult], published: bool = True) -> Any:
    """The same table for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Router eval: quality against share of strong-model calls")
    for i, title in enumerate(header()):
        table.add_column(title, justify="left" if i < 2 else "right")
    for r in rows(results, published):
        table.add_row(*[escape(cell) for cell in r])  # "[paper]" is not rich markup
    return table


def plot(results: Sequence[RouterResult], path: str | Path) -> Path:
    """One panel per dataset: each router's curve, the oracle, and the weak/strong lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r.dataset for r in results))
    cols = min(2, len(datasets))
    nrows = (len(datasets) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, datasets):
        subset = [r for r in results if r.dataset == name]
        for r in subset:
            style = {"linestyle": ":", "color": "grey"} if r.router == "oracle" else {}
            label = f"{r.router} (APGR {r.summary['apgr']:.2f})"
            ax.plot(100 * r.curve.shares, 100 * r.curve.quality, label=label, **style)
        first = subset[0].curve
        ax.axhline(100 * first.weak, color="tab:red", linestyle="--", linewidth=0.8,
                   label="weak model only")
        ax.axhline(100 * first.strong, color="tab:green", linestyle="--", linewidth=0.8,
                   label="strong model only")
        ax.axhline(95 * first.strong, color="black", linestyle="-.", linewidth=0.6,
                   label="95 % of strong")
        ax.set_title(f"{name} (n={subset[0].n})")
        ax.set_xlabel("strong-model calls (%)")
        ax.set_ylabel("quality (%)")
        top = max(max(r.curve.quality) for r in subset if r.router != "oracle")
        ax.set_ylim(100 * first.weak - 3, 100 * max(first.strong, top) + 3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_json(results: Sequence[RouterResult], path: str | Path,
               meta: dict[str, Any] | None = None) -> Path:
    """Every result with its thinned curve, the run's settings and the published figures."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta or {}, "results": [r.to_dict() for r in results],
           "published": PUBLISHED, "published_sources": SOURCES}
    out.write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    return out


def _clean(value: Any) -> Any:
    """NaN (a target never reached) becomes null: strict JSON has no NaN."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
