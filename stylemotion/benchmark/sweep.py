"""The sweep: every row of every model built, then timed round-robin batch size by batch size, with the
end-to-end runtime on the fastest engine; the result written by ``report.write_outputs``."""
from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..engines.torch_engine import TorchEngine
from ..errors import ConfigError, EngineError, MissingDependencyError, StylemotionError
from .machine import device_name, environment, has_native_bf16, matrix_rate, peak_rss_mib, reset_peak_rss, rss_mib
from .report import auto_summary, write_outputs
from .rows import PerBatch, Row, auto_choice, load_model, rows_for, synthesis_flops
from .timing import percentile, psnr, round_robin, sync, time_runs

__all__ = ["Settings", "run"]


@dataclass
class Settings:
    models: list[str]
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    device: str = "cpu"
    iters: int = 10
    warmup: int = 2
    min_seconds: float = 2.0
    threads: int | None = None
    quick: bool = False
    runtime: bool = True  # the end-to-end runtime rows
    out: Path = Path("bench/results")
    tag: str = ""  # appended to the results' file name
    repeat_baseline: bool = True  # time one row's batch 1 again at the end: do two runs agree?
    cache_dir: Path | None = None  # the engine cache the auto row reads and writes (default: the user's)


def run(settings: Settings, log: Callable[[str], None] = print) -> dict:
    """Run the sweep; returns the result dict (also written to ``settings.out``).

    Every engine of a model is built first (build time and memory taken then), and then, batch size by batch
    size, the engines are timed **round-robin**: one run of each in turn, the order rotated every round, until
    each has its runs. A machine whose speed drifts (a shared VM, turbo, another process) slows every row alike,
    so the ratios between rows hold even where absolute figures wander. The CPU rows run under one allocator
    policy (glibc keeps freed memory: ``_malloc.py``), the baseline too, so a speed-up is the engine's own; the
    one row timed before that policy, ``official form, default malloc``, shows what the policy alone is worth."""
    from .._malloc import retain_freed_memory

    device = settings.device
    for b in settings.batches:
        if b < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {b}")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    peaks = {"fp32": matrix_rate(device, torch.float32)}
    if device.startswith("cuda"):
        peaks["fp16"] = matrix_rate(device, torch.float16)
    elif has_native_bf16():
        peaks["bf16"] = matrix_rate(device, torch.bfloat16)
    log("matrix rate (measured): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items() if v))
    rows: list[dict] = []
    unavailable: list[dict] = []
    runtime_rows: list[dict] = []
    consistency = None
    for model in settings.models:
        G = load_model(model)
        flops = synthesis_flops(G)
        log(f"{model}: {flops / 1e9:.2f} GFLOP per image (synthesis, direct convolutions)")
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            ws_all = {b: G.mapping(torch.randn(b, G.z_dim, generator=gen), truncation_psi=0.7) for b in settings.batches}
        reference = TorchEngine(G, device="cpu", plan="reference", retain_memory=False)  # float32, the official form
        refs = {b: reference.run(ws).clone() for b, ws in ws_all.items()}
        del reference
        workdir = Path(tempfile.mkdtemp(prefix="stylemotion-bench-"))

        def timed_row(cand: Row, eng, batch: int, times: list[float], build_s: float, peak) -> dict:
            out = eng.run(ws_all[batch].to(eng.info.device)).float().cpu()
            sync(device)
            med = statistics.median(times)
            precision = eng.info.precision if cand.backend == "auto" else cand.precision
            row = {"model": model, "row": cand.name, "backend": cand.backend, "precision": precision,
                   "baseline": cand.baseline, "batch": batch, "runs": len(times),
                   "ms_per_batch": med * 1e3, "ms_p10": percentile(times, 10) * 1e3,
                   "ms_p90": percentile(times, 90) * 1e3, "images_per_s": batch / med,
                   "gflop_per_image": flops / 1e9,
                   "fraction_of_peak": (flops * batch / med) / peaks[precision] if peaks.get(precision)
                   else None, "build_s": build_s, "detail": eng.info.detail,
                   "max_abs_err_vs_fp32_reference": (out - refs[batch].cpu()).abs().max().item()}
            if batch == 1:
                row["latency_ms_p50"] = percentile(times, 50) * 1e3
                row["latency_ms_p99"] = percentile(times, 99) * 1e3
            if peak is not None:
                row["engine_peak_mib"] = peak
            if precision != "fp32":
                row["psnr_db_vs_fp32"] = psnr(out, refs[batch])
            if cand.backend == "auto":
                row["auto_chose"] = auto_choice(eng.info.detail)
            return row

        def report(row: dict) -> None:
            rows.append(row)
            label = row["row"] + (f" (chose {row['auto_chose']})" if row.get("auto_chose") else "")
            log(f"{model} | {label} | {row['precision']} | batch {row['batch']}: {row['images_per_s']:.3f} "
                f"images/s, {row['ms_per_batch']:.1f} ms/batch (p10-p90 {row['ms_p10']:.1f}-{row['ms_p90']:.1f}, "
                f"{row['runs']} runs)" + (f", PSNR {row['psnr_db_vs_fp32']:.1f} dB" if "psnr_db_vs_fp32" in row else ""))

        from .. import _malloc

        if device == "cpu" and "torch" in settings.backends and not _malloc._state.get("applied"):
            # Before the allocator policy (process-wide, once): the official form as a fresh process runs it.
            eng = TorchEngine(G, device="cpu", plan="reference", retain_memory=False, detail="default malloc")
            cand = Row("torch eager, official form, default malloc", "torch", "fp32", None)
            for batch in settings.batches:
                times = time_runs(eng, ws_all[batch], device=device, warmup=settings.warmup, iters=settings.iters,
                                  min_seconds=settings.min_seconds)
                report(timed_row(cand, eng, batch, times, 0.0, None))
            del eng
        if device == "cpu":
            retain_freed_memory()

        built: list[tuple[Row, object, float, float | None]] = []
        for cand in rows_for(G, device, settings.backends, settings.precisions, workdir, settings.threads,
                             quick=settings.quick, cache_dir=settings.cache_dir):
            if cand.build is None:
                unavailable.append({"model": model, "row": cand.name, "backend": cand.backend,
                                    "precision": cand.precision, "reason": cand.reason})
                log(f"{model} | {cand.name}: not available: {cand.reason}")
                continue
            before = (torch.cuda.memory_allocated() / 2 ** 20 if device.startswith("cuda") else rss_mib()) or 0.0
            reset_peak_rss()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                engine = cand.build()
                if isinstance(engine, PerBatch):
                    for batch in settings.batches:
                        engine.for_batch(batch)
                for batch in settings.batches:  # the first run (and memory) of every batch size, outside timing
                    eng = engine.for_batch(batch) if isinstance(engine, PerBatch) else engine
                    if batch <= eng.info.max_batch:
                        eng.run(ws_all[batch].to(eng.info.device))
                sync(device)
            except (EngineError, MissingDependencyError, StylemotionError) as exc:
                unavailable.append({"model": model, "row": cand.name, "backend": cand.backend,
                                    "precision": cand.precision, "reason": str(exc)})
                log(f"{model} | {cand.name}: not available: {exc}")
                continue
            build_s = time.perf_counter() - t0
            # The engine's own memory: the peak while building it and running each batch size once, above what the
            # process held before (earlier engines stay resident for the round-robin timing).
            peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else peak_rss_mib()
            peak = None if peak is None else max(peak - before, 0.0)
            log(f"{model} | {cand.name}: built in {build_s:.1f} s (including the first run of each batch size)")
            built.append((cand, engine, build_s, peak))

        for batch in settings.batches:
            engines = [(c, e.for_batch(batch) if isinstance(e, PerBatch) else e, b, pk) for c, e, b, pk in built]
            engines = [x for x in engines if batch <= x[1].info.max_batch]
            times = round_robin([e for _, e, _, _ in engines], ws_all[batch], device=device, warmup=settings.warmup,
                                iters=settings.iters, min_seconds=settings.min_seconds)
            for (cand, eng, build_s, peak), t in zip(engines, times):
                report(timed_row(cand, eng, batch, t, build_s, peak))

        if settings.repeat_baseline:
            consistency = _repeat_row(G, rows, model, ws_all, settings, log) or consistency
        if settings.runtime:
            fp32 = [(c, e) for c, e, _, _ in built if c.precision == "fp32" and c.backend != "auto"]
            if settings.quick:  # the fastest fp32 engine at batch 1, offline only
                best = max((r for r in rows if r["model"] == model and r["batch"] == min(settings.batches)
                            and r["precision"] == "fp32" and r["backend"] != "auto"),
                           key=lambda r: r["images_per_s"], default=None)
                fp32 = [(c, e) for c, e in fp32 if best is not None and c.name == best["row"]]
            for cand, engine in fp32:
                streaming = engine.for_batch(1) if isinstance(engine, PerBatch) else engine
                rt = _runtime_row(streaming, cand.name, G, model, settings, log)
                runtime_rows.append(rt)
                for r in rows:
                    if r["model"] == model and r["row"] == cand.name:
                        r["runtime_offline_fps"] = rt["offline_fps"]
                        r["runtime_realtime_latency_ms_p99"] = (rt.get("realtime_latency_ms") or {}).get("p99")
        del built
    _speedups(rows)
    result = {"device": device_name(device), "device_kind": device, "date": dt.datetime.now(dt.timezone.utc)
              .isoformat(timespec="seconds"), "environment": environment(device),
              "matrix_rate_gflops": {k: (v / 1e9 if v else None) for k, v in peaks.items()},
              "settings": {"models": settings.models, "backends": settings.backends,
                           "precisions": settings.precisions, "batches": settings.batches, "iters": settings.iters,
                           "warmup": settings.warmup, "min_seconds": settings.min_seconds, "quick": settings.quick,
                           "tag": settings.tag, "timing": "round-robin over the engines, order rotated each round"},
              "allocator": "glibc keeps freed memory (stylemotion/_malloc.py) for every CPU row but "
                           "'official form, default malloc'" if device == "cpu" else None,
              "baseline": "torch eager, official form (grouped modulated convolution, reference element-wise ops), "
                          "float32, same model and batch",
              "rows": rows, "auto": auto_summary(rows), "not_available": unavailable, "runtime": runtime_rows,
              "consistency": consistency}
    write_outputs(settings.out, result, log)
    return result


def _speedups(rows: list[dict]) -> None:
    base = {(r["model"], r["batch"]): r for r in rows if r["baseline"]}
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["speedup"] = r["images_per_s"] / b["images_per_s"] if b else None


REPEATED_ROW = {"cpu": "torch eager, fast CPU plan", "cuda": "torch cuda fp16 + CUDA graphs"}


def _repeat_row(G, rows, model, ws_all, settings, log) -> dict | None:
    """Time one row again at batch 1 with a fresh engine (PyTorch's fast CPU plan; on CUDA fp16 with graphs):
    two runs of the same row should agree within their spread; the JSON says whether they did."""
    from ..engines.factory import open_engine

    cuda = settings.device.startswith("cuda")
    name = REPEATED_ROW["cuda" if cuda else "cpu"]
    first = next((r for r in rows if r["model"] == model and r["row"] == name and r["batch"] == 1), None)
    if first is None:
        return None
    engine = open_engine(G, backend="torch", device=settings.device,
                         **({"precision": "fp16", "cuda_graphs": True} if cuda else {"plan": "fast"}))
    times = time_runs(engine, ws_all[1].to(engine.info.device), device=settings.device, warmup=settings.warmup,
                      iters=settings.iters, min_seconds=settings.min_seconds)
    second = {"ms_per_batch": statistics.median(times) * 1e3, "ms_p10": percentile(times, 10) * 1e3,
              "ms_p90": percentile(times, 90) * 1e3}
    overlap = second["ms_p10"] <= first["ms_p90"] and first["ms_p10"] <= second["ms_p90"]
    log(f"{model} | {name} again: {second['ms_per_batch']:.1f} ms (first {first['ms_per_batch']:.1f}); "
        f"spreads {'overlap' if overlap else 'DO NOT overlap'}")
    return {"model": model, "row": first["row"], "batch": 1,
            "first": {k: first[k] for k in ("ms_per_batch", "ms_p10", "ms_p90")}, "second": second,
            "agree_within_spread": overlap}


def _runtime_row(engine, name: str, G, model: str, settings: Settings, log) -> dict:
    """The whole runtime (script -> latents -> engine -> uint8 frames) on one engine: offline frames/s into a null
    sink, and unless quick a realtime stream paced at 80% of that, with its frame-latency percentiles."""
    import threading

    from ..pipeline.directions import random_directions
    from ..runtime import NullSink, stream

    dirs = random_directions(G.w_dim, seed=0)
    batch = 1 if settings.device == "cpu" else 8
    per = max(0.5, 4 * batch / 10)
    script = ",".join(f"{e}:{per}" for e in ("happy", "sad", "surprise", "neutral"))
    s = stream(engine, generator=G, directions=dirs, script=script, fps=10, batch=batch)
    sink = NullSink()
    t0 = time.perf_counter()
    s.run(sink)
    offline = sink.frames / (time.perf_counter() - t0)
    row = {"model": model, "engine": name, "batch": batch, "offline_fps": offline, "frames": sink.frames}
    log(f"{model} | runtime on {name}: offline {offline:.2f} frames/s ({sink.frames} frames)")
    if not settings.quick:
        fps = max(0.5, 0.8 * offline)
        live = stream(engine, generator=G, directions=dirs, fps=fps, mode="realtime", batch=batch)
        timer = threading.Timer(max(4.0, 8 / fps), live.finish)
        timer.start()
        with live:
            for _ in live:
                pass
        timer.cancel()
        stats = live.stats()
        row.update({"realtime_fps_target": fps, "realtime_fps": stats["fps"],
                    "realtime_latency_ms": stats["latency_ms"], "realtime_dropped": stats["dropped"]})
        log(f"{model} | realtime at {fps:.2f} fps: latency {stats['latency_ms']}")
    return row

