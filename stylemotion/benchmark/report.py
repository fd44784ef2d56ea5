"""The results as people read them: the markdown table (with what ``auto`` chose and how close it came to the
fastest row), the file names, and the JSON, markdown and PNG chart written atomically side by side."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..atomic import atomic_path
from ..errors import MissingDependencyError

__all__ = ["auto_sentence", "auto_summary", "markdown", "result_stem", "row_label", "write_outputs"]


def row_label(r: dict) -> str:
    """A row's name as the table and the chart show it: ``auto`` says what it chose."""
    return r["row"] + (f" (chose {r['auto_chose']})" if r.get("auto_chose") else "")


def auto_summary(rows: list[dict]) -> list[dict]:
    """For each auto row: what it chose and its images/s against the fastest other row of the same model and batch
    (bf16 rows left out: a preview precision that auto never takes unless asked)."""
    out = []
    for r in rows:
        if r["backend"] != "auto":
            continue
        peers = [p for p in rows if p["model"] == r["model"] and p["batch"] == r["batch"] and p["backend"] != "auto"
                 and p["precision"] != "bf16"]
        if not peers:
            continue
        best = max(peers, key=lambda p: p["images_per_s"])
        ratio = r["images_per_s"] / best["images_per_s"]
        out.append({"model": r["model"], "batch": r["batch"], "chose": r.get("auto_chose"),
                    "images_per_s": r["images_per_s"], "fastest_row": best["row"],
                    "fastest_images_per_s": best["images_per_s"], "auto_vs_fastest": ratio,
                    "within_5_percent": ratio >= 0.95})
    return out


def auto_sentence(a: dict) -> str:
    return (f"auto ({a['model']}, batch {a['batch']}) chose {a['chose']}: {a['images_per_s']:.3f} images/s; the "
            f"fastest other row, {a['fastest_row']}: {a['fastest_images_per_s']:.3f} images/s (auto at "
            f"{a['auto_vs_fastest']:.0%} of it{'' if a['within_5_percent'] else ', MORE THAN 5 % SLOWER'}).")


def markdown(result: dict) -> list[str]:
    rate = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["matrix_rate_gflops"].items() if v)
    lines = [f"# stylemotion bench: {result['device']}, {result['date']}", "",
             f"Matrix rate measured in the same run: {rate}. Speed-up: against the baseline row (torch eager, "
             "official grouped form) at the same model and batch. Fraction of peak counts the direct convolutions' "
             "FLOPs, so a Winograd plan can exceed what its own multiplies would show. Engine MiB: the peak memory "
             "while building the engine and running each batch size once, above what the process held before. "
             "Build s: export, conversion and compilation, never inside a timing.", "",
             "| model | engine | precision | batch | images/s | ms/batch (p10-p90) | speed-up | of peak | "
             "latency p50/p99 ms | engine MiB | build s | error |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lat = (f"{r['latency_ms_p50']:.1f}/{r['latency_ms_p99']:.1f}" if "latency_ms_p50" in r else "")
        err = (f"{r['psnr_db_vs_fp32']:.1f} dB" if "psnr_db_vs_fp32" in r else f"{r['max_abs_err_vs_fp32_reference']:.1e}")
        frac = f"{r['fraction_of_peak']:.0%}" if r.get("fraction_of_peak") else ""
        lines.append(f"| {r['model']} | {row_label(r)} | {r['precision']} | {r['batch']} | {r['images_per_s']:.3f} | "
                     f"{r['ms_per_batch']:.1f} ({r['ms_p10']:.1f}-{r['ms_p90']:.1f}) | "
                     f"{r['speedup']:.2f}x | {frac} | {lat} | {r.get('engine_peak_mib', 0):.0f} | "
                     f"{r['build_s']:.1f} | {err} |")
    for a in result.get("auto", []):
        lines.append("\n" + auto_sentence(a))
    for u in result["not_available"]:
        lines.append(f"\n{u['model']} | {u['row']}: not available: {u['reason']}")
    for rt in result["runtime"]:
        lat = rt.get("realtime_latency_ms") or {}
        live = (f"; realtime {rt['realtime_fps']:.2f} fps at target {rt['realtime_fps_target']:.2f}, frame latency "
                f"p50 {lat.get('p50', float('nan')):.0f} / p99 {lat.get('p99', float('nan')):.0f} ms"
                if "realtime_fps" in rt else "")
        lines.append(f"\nRuntime end to end ({rt['model']}, {rt['engine']}, batch {rt['batch']}): offline "
                     f"{rt['offline_fps']:.2f} frames/s{live}")
    c = result.get("consistency")
    if c:
        lines.append(f"\n{c['row']} timed twice (batch 1): {c['first']['ms_per_batch']:.1f} and {c['second']['ms_per_batch']:.1f} "
                     f"ms; spreads {'overlap' if c['agree_within_spread'] else 'do not overlap'}.")
    return lines


def result_stem(result: dict) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in result["device"])
    tag = result.get("settings", {}).get("tag")
    return f"{safe}-{result['date'][:10]}" + (f"-{tag}" if tag else "")


def write_outputs(out_dir: Path, result: dict, log: Callable[[str], None] = print) -> Path:
    """``<stem>.json``, ``<stem>.md`` and (with matplotlib, the ``bench`` extra) ``<stem>.png`` in ``out_dir``."""
    from .charts import engine_chart

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=True))
    lines = markdown(result)
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    chart = ""
    if result["rows"]:
        try:
            engine_chart(out_dir / f"{stem}.png", result)
            chart = ", .png"
        except MissingDependencyError as exc:  # the figures are written; only the picture is missing
            chart = f" (no chart: {exc})"
    log("\n".join(lines))
    log(f"wrote {out_dir / stem}.json, .md{chart}")
    return out_dir / f"{stem}.json"
