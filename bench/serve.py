"""How many live streams one engine sustains: streams x fps through a ``Hub`` (continuous batching), each stream
read the way the server's publisher reads it.

    python bench/serve.py --model ffhq-256 --device cpu --fps 1 --streams 1,2 --seconds 20
    python bench/serve.py --model ffhq-1024 --device cuda --fps 30 --streams 1,4,8,16,24 --seconds 10
    python bench/serve.py --model digiface-64 --device cpu --fps 30 --streams 1,2,4,6,8,12 --seconds 8 --watched 0.5

The overload policy is the hub's (weighted fair shares, see ``stylemotion/runtime/hub.py``): past the knee every
stream's fps falls together, watched streams (``--watched``: the fraction given one viewer) up to twice the others.
Each row also says whether a server would have admitted that many streams (its measured capacity, the lower of the
start's figure and what full batches showed during the row, with the default headroom: beyond it ``POST /streams``
answers 503 + Retry-After). The chart (``.png``, matplotlib) is the knee:
frames per second per stream against the number of streams, with the capacity's share and the admission limit.

A row is sustained when every stream delivers at least 95 % of the target fps, at most 1 % of frames are dropped,
the p99 lateness (shown minus due) is under 1/fps and no batch failed; the render latency (engine start to uint8
frames on the host, per batch) is reported beside it. Writes ``bench/results/serve-<device>-<date>-<model>``
(.json, .md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import device_name, load_model, pick_device, write_results  # noqa: E402
from stylemotion.engines import open_engine  # noqa: E402
from stylemotion.pipeline.directions import random_directions  # noqa: E402
from stylemotion.runtime import StreamSettings, make_planner  # noqa: E402
from stylemotion.runtime.hub import Hub  # noqa: E402

EMOTIONS = ("happy", "sad", "surprise", "angry", "fear", "neutral")
ADMISSION_HEADROOM = 0.9  # the server's default (ServerConfig.headroom)


def script_for(fps: float) -> str:
    """Six emotions of at least 1 s and 2 frames each."""
    per = max(1.0, 2.0 / fps)
    return ",".join(f"{e}:{per:g}" for e in EMOTIONS)


def run_row(engine, G, directions, *, streams: int, fps: float, seconds: float, max_batch: int | None,
            watched: float = 0.0) -> dict:
    hub = Hub(engine, max_batch=max_batch, max_streams=streams).start()
    capacity = hub.capacity_fps
    settings = StreamSettings(fps=fps)
    device = torch.device(engine.info.device)
    opened = [hub.open(make_planner(G, device, settings, directions=directions, script=script_for(fps), seed=i,
                                    live=True),
                       fps) for i in range(streams)]
    n_watched = round(watched * streams)
    for s in opened[:n_watched]:
        s.viewers = 1
    stop = threading.Event()

    def publisher():  # what the server's publisher does, minus the JPEG
        while not stop.is_set():
            for s in opened:
                s.latest()
            stop.wait(min(s.wait_hint() for s in opened))

    reader = threading.Thread(target=publisher, daemon=True)
    reader.start()
    time.sleep(seconds)
    stop.set()
    reader.join()
    snaps = [s.snapshot() for s in opened]
    hub_stats = hub.stats()
    # what the server would know by now: the start's measurement, lowered by full batches back to back (planning
    # and copies included) once the streams saturated the engine
    capacity = min(capacity, hub.capacity_fps)
    hub.stop()
    fps_each = [s["fps"] if s["fps"] == s["fps"] else 0.0 for s in snaps]  # no frame delivered: 0 fps
    latencies = np.concatenate([np.asarray(s.stats.latency) for s in opened]) * 1e3
    p99 = float(np.percentile(latencies, 99)) if len(latencies) else float("nan")
    worst = float(np.nanmin(fps_each)) if fps_each else float("nan")
    late = [s["lateness_ms"]["p99"] for s in snaps if s["lateness_ms"]["p99"] == s["lateness_ms"]["p99"]]
    late_p99 = float(max(late)) if late else float("nan")
    shown = sum(s["frames"] for s in snaps)
    dropped = int(sum(s["dropped"] for s in snaps))
    watched_fps = fps_each[:n_watched]
    return {"streams": streams, "fps_target": fps, "fps_min": worst, "fps_mean": float(np.nanmean(fps_each)),
            "fps_max": float(np.nanmax(fps_each)) if fps_each else float("nan"), "fps_each": fps_each,
            "watched": n_watched, "fps_watched_mean": float(np.mean(watched_fps)) if watched_fps else None,
            "fps_unwatched_mean": float(np.mean(fps_each[n_watched:])) if streams > n_watched else None,
            "capacity_fps": capacity, "admitted": bool(streams * fps <= ADMISSION_HEADROOM * capacity),
            "latency_p99_ms": p99, "lateness_p99_ms": late_p99, "dropped": dropped,
            "mean_batch": hub_stats["mean_batch"], "render_errors": hub_stats["render_errors"],
            "error": hub_stats["error"],
            # What a viewer sees: every stream at >= 95 % of its fps, at most 1 % of frames dropped, frames shown
            # less than one frame interval after their due time (p99), no failed batch. The render latency (engine
            # start to frames on the host, per batch) is reported but not judged: frames are planned that far ahead.
            "sustained": bool(worst >= 0.95 * fps and dropped <= 0.01 * max(shown + dropped, 1)
                              and late_p99 < 1e3 / fps and not hub_stats["render_errors"])}


def knee_chart(path: Path, rows: list[dict], *, fps: float, title: str) -> Path | None:
    """Frames per second per stream (slowest, mean, fastest) against the number of streams, with each stream's share
    of the measured capacity and the server's admission limit; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = [r["streams"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(n, [r["fps_min"] for r in rows], [r["fps_max"] for r in rows], alpha=0.2, label="slowest..fastest")
    ax.plot(n, [r["fps_mean"] for r in rows], "o-", label="mean fps per stream")
    capacity = [r["capacity_fps"] / r["streams"] for r in rows]
    ax.plot(n, [min(fps, c) for c in capacity], "--", color="grey", label="min(target, capacity / streams)")
    admitted = [r["streams"] for r in rows if r["admitted"]]
    if admitted and max(admitted) < max(n):
        ax.axvline(max(admitted) + 0.5, color="red", linestyle=":", label="admission limit (503 beyond)")
    ax.axhline(fps, color="black", linewidth=0.8)
    ax.set(xlabel="streams", ylabel="frames per second per stream", title=f"The knee: {title}", ylim=(0, fps * 1.15))
    ax.legend(fontsize=8)
    fig.tight_layout()
    from stylemotion.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="torch")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--streams", default="1,2")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--batch", type=int, default=None, help="largest batch of due frames")
    p.add_argument("--watched", type=float, default=0.0, help="fraction of the streams that have a viewer (they "
                   "weigh twice in the overload policy)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    G = load_model(args.model)
    directions = random_directions(G.w_dim, seed=0)
    engine = open_engine(G, backend=args.backend, device=device)
    rows = []
    for n in (int(v) for v in args.streams.split(",")):
        row = run_row(engine, G, directions, streams=n, fps=args.fps, seconds=args.seconds, max_batch=args.batch,
                      watched=args.watched)
        rows.append(row)
        print(f"{n} streams at {args.fps:g} fps: slowest {row['fps_min']:.2f} fps, p99 render latency "
              f"{row['latency_p99_ms']:.1f} ms, p99 lateness {row['lateness_p99_ms']:.1f} ms, mean batch "
              f"{row['mean_batch']:.2f}, dropped {row['dropped']}, mean {row['fps_mean']:.2f} fps"
              f"{'' if row['admitted'] else ' (beyond admission)'}"
              f" -> {'sustained' if row['sustained'] else 'NOT sustained'}", flush=True)
    dev = device_name(device)
    info = engine.info
    best = max((r["streams"] for r in rows if r["sustained"]), default=0)
    result = {"model": args.model, "device": dev, "engine": {"backend": info.backend, "precision": info.precision},
              "rows": rows, "streams_sustained": best, "torch": torch.__version__,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/serve.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = [f"# Live streams on one engine: {args.model} on {dev} ({info.backend} {info.precision})", "",
             "| streams | target fps | slowest stream fps | mean | fastest | watched / unwatched mean | "
             "p99 render latency (ms) | p99 lateness (ms) | mean batch | dropped | sustained | admitted |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r):
        if not r["watched"]:
            return "-"
        other = "-" if r["fps_unwatched_mean"] is None else f"{r['fps_unwatched_mean']:.2f}"
        return f"{r['fps_watched_mean']:.2f} / {other}"

    lines += [f"| {r['streams']} | {r['fps_target']:g} | {r['fps_min']:.2f} | {r['fps_mean']:.2f} | "
              f"{r['fps_max']:.2f} | {pair(r)} | {r['latency_p99_ms']:.1f} | {r['lateness_p99_ms']:.1f} | "
              f"{r['mean_batch']:.2f} | {r['dropped']} | {'yes' if r['sustained'] else 'no'} | "
              f"{'yes' if r['admitted'] else 'no (503)'} |" for r in rows]
    lines += ["", f"Sustained: {best} stream(s) at {args.fps:g} fps on one {dev} (streams per GPU).",
              "", f"Engine: {info.detail}", "", f"`{result['command']}`"]
    stem = f"serve-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    write_results(Path(args.out), stem, result, lines)
    knee_chart(Path(args.out) / f"{stem}.png", rows, fps=args.fps, title=f"{args.model} on {dev}")
    print(f"streams per GPU at {args.fps:g} fps ({args.model}): {best}")
    failed = [r for r in rows if r["render_errors"] or r["error"]]
    for r in failed:
        print(f"error: {r['streams']} streams: {r['render_errors']} failed batches, last: {r['error']}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
