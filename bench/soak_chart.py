"""The soak's chart: the server's RSS, open file descriptors and threads against time, one panel each, the warm-up
shaded and the baselines the verdict compares against marked (matplotlib, the ``bench`` extra)."""
from __future__ import annotations

from pathlib import Path

from stylemotion._optional import require
from stylemotion.atomic import atomic_path


def _log_if_spans_decades(ax, values) -> bool:
    """A log y axis where the figures span two decades or more (a linear one would flatten all but the largest)."""
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) >= 100:
        ax.set_yscale("log")
        return True
    return False


def chart(path: Path, result: dict) -> Path:
    """Write ``path`` (PNG): RSS (MiB) with its after-warm-up baseline and the growth limit, and open fds and
    threads with the warm-up's highest, against time; the warm-up shaded, the verdict in the title."""
    require("matplotlib", extra="bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    samples = result["samples"]
    minutes = samples[-1]["t"] > 600
    scale, unit = (60.0, "min") if minutes else (1.0, "s")
    ts = [s["t"] / scale for s in samples]
    warmup = min(result["warmup_seconds"], samples[-1]["t"]) / scale
    rss = result["rss_mib"]
    panels = [
        ("RSS (MiB)", [s["rss_kib"] / 1024 for s in samples], False,
         [(rss["after_warmup"], f"after warm-up (baseline): {rss['after_warmup']:g} MiB", "--", "tab:gray"),
          (rss["after_warmup"] * (1 + rss["limit_percent"] / 100), f"limit: +{rss['limit_percent']:g} %", ":",
           "tab:red")]),
        ("open file descriptors", [s["fds"] for s in samples], True,
         [(result["fds"]["warmup_max"], f"warm-up's highest: {result['fds']['warmup_max']}", "--", "tab:gray")]),
        ("threads", [s["threads"] for s in samples], True,
         [(result["threads"]["warmup_max"], f"warm-up's highest: {result['threads']['warmup_max']}", "--",
           "tab:gray")]),
    ]

    fig = Figure(figsize=(9, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    verdict = "passed" if result["passed"] else "FAILED"
    length = f"{result['seconds'] / 60:.1f} min" if result["seconds"] >= 120 else f"{result['seconds']:g} s"
    fig.suptitle(f"Soak of `stylemotion serve {result['model']}`: {length} at {result['fps']:g} fps; "
                 f"RSS {rss['growth_percent']:+.2f} % after warm-up: {verdict}")
    for i, (ax, (label, ys, integer, marks)) in enumerate(zip(axes, panels)):
        ax.axvspan(0, warmup, color="0.9", label="warm-up" if i == 0 else None)
        ax.plot(ts, ys, color="tab:blue", linewidth=1.5)
        for value, text, style, colour in marks:
            ax.axhline(value, linestyle=style, color=colour, linewidth=1, label=text)
        if not _log_if_spans_decades(ax, ys) and integer:  # counts: whole-number ticks, room around a flat line
            lo, hi = min(ys + [m[0] for m in marks]), max(ys + [m[0] for m in marks])
            pad = max(1, round(0.1 * (hi - lo)))
            ax.set_ylim(max(0, lo - pad), hi + pad)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small", framealpha=0.8)
    axes[-1].set_xlabel(f"time since the clients started ({unit})")
    axes[-1].set_xlim(0, max(ts[-1], 1e-9))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
