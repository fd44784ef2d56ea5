"""The runtime's overhead and timing: what the whole pipeline delivers against the engine alone, and how a live
stream keeps time.

    python bench/stream.py --model ffhq-256 --device cpu --batch 1,2 --seconds 4
    python bench/stream.py --model ffhq-1024 --device cuda --batch 1,4,8,16 --fps 60 --seconds 10

Offline: for each batch size, the engine alone (``engine.run`` on ready-made ws, synchronised) against the
whole offline stream into a null sink (planning, interpolation, engine, uint8, the copy to the host and the
queues between them), on the same engine. The ratio at the batch where the engine is fastest is the runtime's
efficiency (the target is >= 0.9).

Realtime: a stream paced at ``--fps`` for ``--seconds`` with one control change a second: delivered fps, frame
latency (engine start -> uint8 frames on the host) p50/p95/p99, control latency (control -> first frame that
reflects it) and dropped frames.

Writes ``bench/results/stream-<device>-<date>-<model>.json``, a markdown table and a PNG chart beside it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engines import time_engine  # noqa: E402
from bench.run import device_name, load_model, pick_device, write_results  # noqa: E402
from stylemotion.engines import open_engine  # noqa: E402
from stylemotion.pipeline.directions import random_directions  # noqa: E402
from stylemotion.runtime import NullSink, stream  # noqa: E402

EMOTIONS = ("happy", "sad", "surprise", "angry", "fear", "disgust", "neutral")


def engine_only(engine, G, batch: int, iters: int) -> float:
    """Images/s of ``engine.run`` alone on ws already on the device."""
    ws = G.mapping(torch.randn(batch, G.z_dim), truncation_psi=0.7).to(engine.info.device)
    return batch / time_engine(engine, ws, iters)


def script_for(frames: int, fps: float) -> str:
    """A script of about ``frames`` frames that visits several emotions (transitions and holds)."""
    per = max(frames, 8) / fps / 4  # at least two frames per emotion
    return ",".join(f"{EMOTIONS[i]}:{per:.6f}" for i in range(4))


def offline_row(engine, G, directions, batch: int, frames: int, fps: float) -> float:
    """Frames/s of a whole offline stream into a null sink (one warm-up stream first)."""
    stream(engine, generator=G, directions=directions, script=script_for(batch * 2, fps), fps=fps,
           batch=batch).run(NullSink())
    s = stream(engine, generator=G, directions=directions, script=script_for(frames, fps), fps=fps, batch=batch)
    sink = NullSink()
    t0 = time.perf_counter()
    s.run(sink)
    return sink.frames / (time.perf_counter() - t0)


def realtime_row(engine, G, directions, *, fps: float, seconds: float, batch: int) -> dict:
    import threading

    s = stream(engine, generator=G, directions=directions, fps=fps, mode="realtime", batch=batch)
    stop = threading.Timer(seconds, s.finish)  # ends on time even if every frame were dropped
    t0 = time.perf_counter()
    changes = 0
    stop.start()
    with s:
        for _ in s:
            if time.perf_counter() - t0 >= changes + 0.5:  # one control a second, from half a second in
                s.control(emotion=EMOTIONS[changes % len(EMOTIONS)])
                changes += 1
    stop.cancel()
    stats = s.stats()
    return {"fps_target": fps, "fps": stats["fps"], "frames": stats["frames"], "dropped": stats["dropped"],
            "latency_ms": stats["latency_ms"], "lateness_ms": stats["lateness_ms"],
            "control_latency_ms": stats["control_latency_ms"], "batch": batch}


def chart(path, labels, values, **kw) -> None:
    """The PNG beside the results, drawn with matplotlib (the ``bench`` extra); without it, said and skipped."""
    from stylemotion.benchmark.charts import bar_chart
    from stylemotion.errors import MissingDependencyError

    try:
        bar_chart(path, labels, values, **kw)
    except MissingDependencyError as exc:
        print(f"no chart: {exc}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256", help="checkpoint, built-in name or tiny-32")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="torch", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    p.add_argument("--onnx", default=None, help="synthesis.onnx for onnxruntime / tensorrt")
    p.add_argument("--precision", default=None, choices=[None, "fp32", "fp16"])
    p.add_argument("--batch", default="1,2", help="offline batch sizes to try")
    p.add_argument("--frames", type=int, default=None, help="frames per offline stream (default 4 x the batch, >= 8)")
    p.add_argument("--iters", type=int, default=4, help="engine-only calls per batch size")
    p.add_argument("--fps", type=float, default=12.0, help="realtime target")
    p.add_argument("--rt-batch", type=int, default=1, help="realtime batch size")
    p.add_argument("--seconds", type=float, default=4.0, help="realtime stream length")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    G = load_model(args.model)  # the engine takes its own copy to the device
    directions = random_directions(G.w_dim, seed=0)
    engine = open_engine(G, backend=args.backend, device=device, precision=args.precision, onnx_path=args.onnx,
                         max_batch=max(int(b) for b in args.batch.split(",")))
    info = engine.info
    print(f"{args.model}: {info.backend} {info.precision} on {info.device}", flush=True)
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        gen = engine_only(engine, G, batch, args.iters)
        e2e = offline_row(engine, G, directions, batch, args.frames or max(8, 4 * batch), args.fps)
        rows.append({"batch": batch, "engine_fps": gen, "stream_fps": e2e, "ratio": e2e / gen})
        print(f"batch {batch}: engine {gen:.2f} images/s, offline stream {e2e:.2f} frames/s "
              f"(ratio {e2e / gen:.3f})", flush=True)
    best = max(rows, key=lambda r: r["engine_fps"])
    rt = realtime_row(engine, G, directions, fps=args.fps, seconds=args.seconds, batch=args.rt_batch)
    print(f"realtime {args.fps:g} fps: delivered {rt['fps']:.2f} fps, latency p99 {rt['latency_ms']['p99']:.1f} ms, "
          f"control latency max {rt['control_latency_ms']['max']:.0f} ms, dropped {rt['dropped']}", flush=True)
    dev = device_name(device)
    result = {"model": args.model, "device": dev, "engine": {"backend": info.backend, "precision": info.precision,
                                                            "device": info.device, "detail": info.detail},
              "torch": torch.__version__, "offline": rows, "best_batch": best["batch"],
              "offline_ratio_at_best": best["ratio"], "realtime": rt,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/stream.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = [f"# Runtime: {args.model} on {dev} ({info.backend} {info.precision})", "",
             "| batch | engine alone (images/s) | offline stream (frames/s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['engine_fps']:.2f} | {r['stream_fps']:.2f} | {r['ratio']:.3f} |" for r in rows]
    lines += ["", f"Best engine batch {best['batch']}: offline stream / engine = {best['ratio']:.3f} (target >= 0.9).",
              "", f"Realtime at {args.fps:g} fps (batch {args.rt_batch}, {args.seconds:g} s, a control each second): "
              f"{rt['fps']:.2f} fps delivered, frame latency p50/p95/p99 {rt['latency_ms']['p50']:.1f}/"
              f"{rt['latency_ms']['p95']:.1f}/{rt['latency_ms']['p99']:.1f} ms, control latency p50 "
              f"{rt['control_latency_ms']['p50']:.0f} ms (max {rt['control_latency_ms']['max']:.0f}), "
              f"{rt['dropped']} dropped.", "", f"`{result['command']}`"]
    stem = f"stream-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    out = Path(args.out)
    write_results(out, stem, result, lines)
    labels = [f"b{r['batch']} {kind}" for r in rows for kind in ("engine", "stream")]
    values = [v for r in rows for v in (r["engine_fps"], r["stream_fps"])]
    chart(out / f"{stem}.png", labels, values, title=f"{args.model} on {dev}: the offline stream against its engine",
          xlabel="frames/s (engine: images/s of engine.run alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
