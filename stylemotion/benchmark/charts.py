"""The benchmark's chart, drawn with matplotlib (the ``bench`` extra, imported when a chart is drawn) on its Agg
canvas: no pyplot, no global backend switched, nothing left open.

One panel per model. A run over several batch sizes draws images/s against batch size, one line per engine; a run
at one batch size draws one bar per engine, fastest first, each labelled with its images/s and its speed-up. A
scale is logarithmic where the figures span a decade or more (batch sizes: from 4x). The baseline row is dashed
(and hatched as a bar, with a dashed line at its figure); the ``auto`` row is drawn in black and says what it chose.
"""
from __future__ import annotations

import json
from pathlib import Path

from .._optional import require
from ..atomic import atomic_path

__all__ = ["bar_chart", "engine_chart", "redraw"]

BASELINE_COLOR, AUTO_COLOR = "#7f7f7f", "black"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def _figure(width: float, height: float):
    require("matplotlib", extra="bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series_label(rows: list[dict]) -> str:
    """An engine's name in the legend: its precision where not fp32, and what auto chose (each batch's, when they
    differ)."""
    first = rows[0]
    label = first["row"] + (f" [{first['precision']}]" if first["precision"] != "fp32" else "")
    chose = list(dict.fromkeys(r.get("auto_chose") for r in rows if r.get("auto_chose")))
    if chose:
        label += f" (chose {', '.join(chose)})"
    return label


def _style(rows: list[dict], i: int) -> dict:
    if rows[0]["baseline"]:
        return dict(color=BASELINE_COLOR, linestyle="--", linewidth=2, marker="s")
    if rows[0]["backend"] == "auto":
        return dict(color=AUTO_COLOR, linestyle="-", linewidth=2.5, marker="*", markersize=11, zorder=5)
    return dict(color=PALETTE[i % len(PALETTE)], linestyle="-", linewidth=1.5, marker="o")


def _spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) >= 10


def _figure_text(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:#.3g}"


def _lines(ax, rows: list[dict], model: str) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["row"], r["precision"] if r["backend"] != "auto" else "auto"), []).append(r)
    batches = sorted({r["batch"] for r in rows})
    others = 0
    for pts in series.values():
        pts = sorted(pts, key=lambda r: r["batch"])
        style = _style(pts, others)
        others += not (pts[0]["baseline"] or pts[0]["backend"] == "auto")
        ax.plot([r["batch"] for r in pts], [r["images_per_s"] for r in pts], label=_series_label(pts), **style)
    if batches[-1] / batches[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in batches])
    if _spans_decades([r["images_per_s"] for r in rows]):
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s (higher is faster)")
    ax.set_title(f"{model}: images/s against batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _bars(ax, rows: list[dict], model: str) -> None:
    rows = sorted(rows, key=lambda r: -r["images_per_s"])
    values = [r["images_per_s"] for r in rows]
    others = 0
    for y, r in enumerate(rows):
        if r["baseline"]:
            kw = dict(color="white", edgecolor=BASELINE_COLOR, hatch="//", linestyle="--", linewidth=1.5)
        elif r["backend"] == "auto":
            kw = dict(color=AUTO_COLOR)
        else:
            kw = dict(color=PALETTE[others % len(PALETTE)])
            others += 1
        ax.barh(y, r["images_per_s"], height=0.7, **kw)
        speedup = f", {r['speedup']:.2f}x" if r.get("speedup") else ""
        ax.annotate(f" {_figure_text(r['images_per_s'])}{speedup}", (r["images_per_s"], y), va="center", fontsize=8)
    base = next((r["images_per_s"] for r in rows if r["baseline"]), None)
    if base is not None:
        ax.axvline(base, color=BASELINE_COLOR, linestyle="--", linewidth=1, label="baseline")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_series_label([r]) for r in rows], fontsize=8)
    ax.invert_yaxis()  # fastest on top
    if _spans_decades(values):
        ax.set_xscale("log")
        ax.set_xlim(right=max(values) * 4)  # room for the figures at the bars' ends
    else:
        ax.set_xlim(0, max(values) * 1.25)  # room for the figures at the bars' ends
    ax.set_xlabel(f"images/s at batch {rows[0]['batch']} (higher is faster; speed-up against the baseline, dashed)")
    ax.set_title(f"{model}: images/s by engine")
    ax.grid(True, axis="x", which="both", alpha=0.3)


def engine_chart(path: str | Path, result: dict) -> Path:
    """Draw ``result`` (``sweep.run``'s dict) to the PNG ``path``, written atomically."""
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    several_batches = len({r["batch"] for r in rows}) > 1
    heights = [4.5 if several_batches else 1.2 + 0.38 * sum(r["model"] == m for r in rows) for m in models]
    fig = _figure(11 if several_batches else 10, sum(heights) + 0.5)
    axes = fig.subplots(len(models), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, model in zip(axes, models):
        mine = [r for r in rows if r["model"] == model]
        (_lines if several_batches else _bars)(ax, mine, model)
    fig.suptitle(f"stylemotion bench: {result['device']}, {result['date'][:10]}", fontsize=11)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def redraw(json_path: str | Path) -> Path:
    """The chart of saved results (``<stem>.json`` -> ``<stem>.png`` beside it), no timing."""
    json_path = Path(json_path)
    result = json.loads(json_path.read_text())
    return engine_chart(json_path.with_suffix(".png"), result)


def bar_chart(path: str | Path, labels: list[str], values: list[float], *, title: str, xlabel: str,
              reference: float | None = None, reference_label: str = "reference") -> Path:
    """One horizontal bar per label (the bench scripts' charts: ops speed-ups, stream against engine), each labelled
    with its figure; a logarithmic scale where the figures span a decade; ``reference`` drawn as a dashed line."""
    fig = _figure(9, 1.2 + 0.32 * len(labels))
    ax = fig.subplots()
    for y, v in enumerate(values):
        ax.barh(y, v, height=0.7, color=PALETTE[0])
        ax.annotate(f" {_figure_text(v)}", (v, y), va="center", fontsize=8)
    if reference is not None:
        ax.axvline(reference, color=BASELINE_COLOR, linestyle="--", linewidth=1.2, label=reference_label)
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    positive = [v for v in values if v > 0]
    if _spans_decades(values + ([reference] if reference else [])):
        ax.set_xscale("log")
        ax.set_xlim(min(positive + ([reference] if reference else [])) / 1.5, max(positive) * 4)
    else:
        ax.set_xlim(0, max(values + ([reference] if reference else [])) * 1.25)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
