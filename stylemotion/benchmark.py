"""The benchmark behind ``bench/run.py``, ``make bench`` and ``stylemotion bench``: every engine side by side.

For each model, backend, precision and batch size: generator-only images/s (warm-up excluded, device work
synchronised before the host clock is read, median of the runs and their 10th-90th percentile spread), batch-1
latency p50/p99, peak memory, the engine's build time (export, conversion, compilation: never inside a timing),
the error against the float32 reference (PSNR for reduced precisions), the FLOPs per image and the fraction of
the machine's matrix rate, measured in the same run. Each model's first row is the **baseline**: float32 eager
PyTorch in the official grouped ("fused") modulated-convolution form with the reference element-wise ops, as
NVlabs' code runs on a CPU; every row carries its speed-up against the baseline at the same batch size. One row,
``official graph``, is the same network exported in that official form (dynamo, opset 18, fixed batch) as a user
would export NVlabs' generator, run by OpenVINO with f32 asked for. Then the end-to-end runtime (script ->
latents -> engine -> uint8 frames) on the fastest engine: offline frames/s and, unless ``--quick``, a realtime
stream's frame-latency p99, for every engine (``--quick``: offline, on the fastest engine only).

A row that cannot run here is listed as ``not available: <reason>``, never with a number. Results: a printed
table, ``<out>/<device>-<date>.json`` (top-level ``rows``), a markdown table and a PNG chart (images/s against
batch, one line per engine) beside it.
"""
from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import atomic_path
from .errors import ConfigError, EngineError, MissingDependencyError, StylemotionError

TINY_MODEL = "tiny-32"
TINY_OVERRIDES = dict(img_resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=32)
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")


def load_model(name: str, device: str = "cpu"):
    """A checkpoint, a built-in name, or ``tiny-32`` (ffhq-256's config shrunk to 32x32, seeded random weights:
    a dry-run model whose figures measure nothing)."""
    from .checkpoints import load_generator

    if name == TINY_MODEL:
        return load_generator("ffhq-256", config=TINY_OVERRIDES, device=device)
    return load_generator(name, device=device)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model() or platform.machine()} x{torch.get_num_threads()} threads"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment(device: str) -> dict:
    """What the figures depend on: CPU, its matrix-relevant flags, threads, GPU and driver, library versions."""
    from .engines.factory import cpu_flags

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c")))
    versions = {}
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    env = {"cpu": cpu_model(), "cpu_flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "python": platform.python_version(), "versions": versions, "gpu": None, "driver": None}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matrix_rate(device: str, dtype: torch.dtype, seconds: float = 1.0) -> float | None:
    """Measured FLOP/s of a large square matrix product in ``dtype`` on ``device`` (None: not supported here)."""
    n = 2048 if device == "cpu" else 8192
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
    except (RuntimeError, TypeError):
        return None
    sync(device)
    runs, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        runs += 1
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and runs >= 2:
            return 2 * n ** 3 * runs / elapsed


def has_native_bf16() -> bool:
    from .engines.factory import cpu_flags

    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def synthesis_flops(G) -> int:
    """FLOPs (2 x multiply-adds) of one image's synthesis, counted on the direct (non-Winograd) convolutions."""
    mapping = sum(2 * getattr(G.mapping, f"fc{i}").weight.numel() for i in range(G.mapping.num_layers))
    return G.flops_per_image() - mapping


# ---------------------------------------------------------------- peak memory


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set (Linux: ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    """The process's resident set now."""
    return _status_mib("VmRSS")


def peak_rss_mib() -> float | None:
    """The process's peak resident set since the last ``reset_peak_rss``."""
    return _status_mib("VmHWM")


# ---------------------------------------------------------------- engines to time


@dataclass
class Candidate:
    """One engine configuration: a row of the table (per batch size)."""

    name: str
    backend: str
    precision: str
    build: Callable[[], object] | None  # -> engine; None when unavailable
    reason: str | None = None  # why it is not available
    baseline: bool = False


def export_official_graph(G, batch: int, folder: Path) -> Path:
    """The official form exported as a user would export NVlabs' generator: dynamo, opset 18, fixed batch (its
    grouped convolution has one group per sample, which a dynamic batch cannot express)."""
    path = folder / f"official-b{batch}.onnx"
    from .export.networks import OfficialSynthesis

    module = OfficialSynthesis(copy.deepcopy(G).cpu().float().eval())
    ws = torch.zeros(batch, G.num_ws, G.w_dim)
    with torch.no_grad():
        torch.onnx.export(module, (ws,), str(path), dynamo=True, opset_version=18, input_names=["ws"],
                          output_names=["images"], verbose=False)
    return path


class _StaticBatch:
    """Builds an engine per batch size on first use (the official graph's batch is fixed)."""

    def __init__(self, make: Callable[[int], object]):
        self.make, self.engines, self.info = make, {}, None

    def for_batch(self, batch: int):
        if batch not in self.engines:
            self.engines[batch] = self.make(batch)
        self.info = self.engines[batch].info
        return self.engines[batch]


def candidates(G, device: str, backends, precisions, workdir: Path, threads: int | None,
               quick: bool = False) -> list[Candidate]:
    """Every engine row for this device, each buildable or with the reason it is not. ``quick`` leaves out ONNX
    Runtime on the CPU plan's graph (its export is the longest build, and it is not a headline row)."""
    from .engines.factory import open_engine
    from .engines.ort_engine import OrtEngine
    from .engines.ov_engine import OpenVinoEngine
    from .engines.torch_engine import TorchEngine
    from .export.networks import synthesis_cpu_spec, synthesis_spec
    from .export.onnx_export import export_onnx

    ort_missing = ("onnxruntime is not installed (pip install 'stylemotion[onnx]')"
                   if importlib.util.find_spec("onnxruntime") is None else None)
    if ort_missing is None and importlib.util.find_spec("onnxscript") is None:
        ort_missing = "onnxscript is not installed (the ONNX exporter needs it: pip install 'stylemotion[onnx]')"
    ov_missing = ("openvino is not installed (pip install 'stylemotion[openvino]')"
                  if importlib.util.find_spec("openvino") is None else None)
    out: list[Candidate] = []
    cuda = device.startswith("cuda")

    def exported(spec_fn):
        def build():
            spec = spec_fn(G)
            return export_onnx(spec, workdir / spec.name, batches=[1, 2] if not quick else [1])
        return build

    if not cuda:
        out.append(Candidate("torch eager, official form (baseline)", "torch", "fp32",
                             lambda: TorchEngine(G, device="cpu", plan="reference", detail="baseline"),
                             baseline=True))
        out.append(Candidate("torch eager, fast CPU plan", "torch", "fp32",
                             lambda: open_engine(G, backend="torch", device="cpu", plan="fast")))
        graphs = [("reference graph", synthesis_spec)] + ([] if quick else [("fast CPU plan graph", synthesis_cpu_spec)])
        for graph, spec_fn in graphs:
            make = exported(spec_fn)
            out.append(Candidate(f"onnxruntime, {graph}", "onnxruntime", "fp32",
                                 None if ort_missing else (lambda make=make: OrtEngine(
                                     make(), synthesis_spec(G), provider="cpu", threads=threads)),
                                 reason=ort_missing))
        ov_reason = ov_missing or ort_missing
        out.append(Candidate("openvino, official graph", "openvino", "fp32",
                             None if ov_reason else (lambda: _StaticBatch(lambda b: OpenVinoEngine(
                                 export_official_graph(G, b, workdir), synthesis_spec(G), threads=threads,
                                 max_batch=b))),
                             reason=ov_reason))
        out.append(Candidate("openvino, fast CPU plan", "openvino", "fp32",
                             None if ov_missing else (lambda: open_engine(G, backend="openvino", threads=threads)),
                             reason=ov_missing))
        bf16 = ov_missing or (None if has_native_bf16() else
                              "this CPU has no native bf16 (avx512_bf16 or amx_bf16); OpenVINO would emulate it")
        out.append(Candidate("openvino bf16 preview, fast CPU plan", "openvino", "bf16",
                             None if bf16 else (lambda: open_engine(G, backend="openvino", precision="bf16",
                                                                    threads=threads)),
                             reason=bf16))
        out.append(Candidate("onnxruntime fp16", "onnxruntime", "fp16", None,
                             reason="ONNX Runtime's CPU provider has no fp16 convolutions"))
        out.append(Candidate("torch fp16", "torch", "fp16", None, reason="fp16 needs CUDA; this is the CPU"))
    else:
        out.append(Candidate("torch cuda, official form (baseline)", "torch", "fp32",
                             lambda: open_engine(G, backend="torch", device=device, precision="fp32",
                                                 cuda_graphs=False), baseline=True))
        out.append(Candidate("torch cuda fp16", "torch", "fp16",
                             lambda: open_engine(G, backend="torch", device=device, precision="fp16",
                                                 cuda_graphs=False)))
        out.append(Candidate("torch cuda fp16 + CUDA graphs", "torch", "fp16",
                             lambda: open_engine(G, backend="torch", device=device, precision="fp16",
                                                 cuda_graphs=True)))
        from .engines.factory import _ort_providers

        gpu_ort = ort_missing or (None if "CUDAExecutionProvider" in _ort_providers() else
                                  "this onnxruntime has no CUDAExecutionProvider (pip install 'stylemotion[gpu]')")
        make = exported(synthesis_spec)
        out.append(Candidate("onnxruntime cuda, reference graph", "onnxruntime", "fp32",
                             None if gpu_ort else (lambda: open_engine(G, backend="onnxruntime", device=device,
                                                                       onnx_path=make())), reason=gpu_ort))
        out.append(Candidate("openvino", "openvino", "fp32", None, reason="OpenVINO runs on the CPU; this is a GPU run"))
    trt = ("the tensorrt package is not installed (pip install 'stylemotion[tensorrt]')"
           if importlib.util.find_spec("tensorrt") is None else "no CUDA device" if not cuda else ort_missing)
    make = exported(synthesis_spec)
    out.append(Candidate("tensorrt fp16", "tensorrt", "fp16",
                         None if trt else (lambda: open_engine(G, backend="tensorrt", device=device,
                                                               onnx_path=make(), precision="fp16")), reason=trt))
    return [c for c in out if c.backend in backends and (c.precision in precisions or c.baseline)]


# ---------------------------------------------------------------- timing


def time_runs(engine, ws: torch.Tensor, *, device: str, warmup: int, iters: int, min_seconds: float,
              max_seconds: float = 30.0) -> list[float]:
    """Seconds per ``engine.run`` after ``warmup`` runs: ``iters`` runs and at least ``min_seconds`` (at most 1000
    runs), cut short after ``max_seconds`` once 3 runs are in (slow rows: 1024x1024 on a CPU); each run
    synchronised before the clock is read."""
    for _ in range(warmup):
        engine.run(ws)
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        spent = time.perf_counter() - start
        if len(times) >= 3 and spent > max_seconds:
            break
        if len(times) >= iters and (spent >= min_seconds or len(times) >= 1000):
            break
        t0 = time.perf_counter()
        engine.run(ws)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double().cpu()
    mse = float(((a.double().cpu() - ref) ** 2).mean())
    peak = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)


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


def run(settings: Settings, log: Callable[[str], None] = print) -> dict:
    """Run the sweep; returns the result dict (also written to ``settings.out``).

    Every engine of a model is built first (build time and memory taken then), and then, batch size by batch
    size, the engines are timed **round-robin**: one run of each in turn, the order rotated every round, until
    each has its runs. A machine whose speed drifts (a shared VM, turbo, another process) slows every row alike,
    so the ratios between rows hold even where absolute figures wander. The CPU rows run under one allocator
    policy (glibc keeps freed memory: ``_malloc.py``), the baseline too, so a speed-up is the engine's own; the
    one row timed before that policy, ``official form, default malloc``, shows what the policy alone is worth."""
    from ._malloc import retain_freed_memory

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
        from .engines.torch_engine import TorchEngine

        reference = TorchEngine(G, device="cpu", plan="reference", retain_memory=False)  # float32, the official form
        refs = {b: reference.run(ws).clone() for b, ws in ws_all.items()}
        del reference
        workdir = Path(tempfile.mkdtemp(prefix="stylemotion-bench-"))

        def timed_row(cand: Candidate, eng, batch: int, times: list[float], build_s: float, peak) -> dict:
            out = eng.run(ws_all[batch].to(eng.info.device)).float().cpu()
            sync(device)
            med = statistics.median(times)
            row = {"model": model, "row": cand.name, "backend": cand.backend, "precision": cand.precision,
                   "baseline": cand.baseline, "batch": batch, "runs": len(times),
                   "ms_per_batch": med * 1e3, "ms_p10": percentile(times, 10) * 1e3,
                   "ms_p90": percentile(times, 90) * 1e3, "images_per_s": batch / med,
                   "gflop_per_image": flops / 1e9,
                   "fraction_of_peak": (flops * batch / med) / peaks[cand.precision] if peaks.get(cand.precision)
                   else None, "build_s": build_s, "detail": eng.info.detail,
                   "max_abs_err_vs_fp32_reference": (out - refs[batch].cpu()).abs().max().item()}
            if batch == 1:
                row["latency_ms_p50"] = percentile(times, 50) * 1e3
                row["latency_ms_p99"] = percentile(times, 99) * 1e3
            if peak is not None:
                row["engine_peak_mib"] = peak
            if cand.precision != "fp32":
                row["psnr_db_vs_fp32"] = psnr(out, refs[batch])
            return row

        def report(row: dict) -> None:
            rows.append(row)
            log(f"{model} | {row['row']} | {row['precision']} | batch {row['batch']}: {row['images_per_s']:.3f} "
                f"images/s, {row['ms_per_batch']:.1f} ms/batch (p10-p90 {row['ms_p10']:.1f}-{row['ms_p90']:.1f}, "
                f"{row['runs']} runs)" + (f", PSNR {row['psnr_db_vs_fp32']:.1f} dB" if "psnr_db_vs_fp32" in row else ""))

        from . import _malloc

        if device == "cpu" and "torch" in settings.backends and not _malloc._state.get("applied"):
            # Before the allocator policy (process-wide, once): the official form as a fresh process runs it.
            from .engines.torch_engine import TorchEngine

            eng = TorchEngine(G, device="cpu", plan="reference", retain_memory=False, detail="default malloc")
            cand = Candidate("torch eager, official form, default malloc", "torch", "fp32", None)
            for batch in settings.batches:
                times = time_runs(eng, ws_all[batch], device=device, warmup=settings.warmup, iters=settings.iters,
                                  min_seconds=settings.min_seconds)
                report(timed_row(cand, eng, batch, times, 0.0, None))
            del eng
        if device == "cpu":
            retain_freed_memory()

        built: list[tuple[Candidate, object, float, float | None]] = []
        for cand in candidates(G, device, settings.backends, settings.precisions, workdir, settings.threads,
                               quick=settings.quick):
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
                if isinstance(engine, _StaticBatch):
                    for batch in settings.batches:
                        engine.for_batch(batch)
                for batch in settings.batches:  # the first run (and memory) of every batch size, outside timing
                    eng = engine.for_batch(batch) if isinstance(engine, _StaticBatch) else engine
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
            engines = [(c, e.for_batch(batch) if isinstance(e, _StaticBatch) else e, b, pk) for c, e, b, pk in built]
            engines = [x for x in engines if batch <= x[1].info.max_batch]
            times = round_robin([e for _, e, _, _ in engines], ws_all[batch], device=device, warmup=settings.warmup,
                                iters=settings.iters, min_seconds=settings.min_seconds)
            for (cand, eng, build_s, peak), t in zip(engines, times):
                report(timed_row(cand, eng, batch, t, build_s, peak))

        if settings.repeat_baseline:
            consistency = _repeat_row(G, rows, model, ws_all, settings, log) or consistency
        if settings.runtime:
            fp32 = [(c, e) for c, e, _, _ in built if c.precision == "fp32"]
            if settings.quick:  # the fastest fp32 engine at batch 1, offline only
                best = max((r for r in rows if r["model"] == model and r["batch"] == min(settings.batches)
                            and r["precision"] == "fp32"), key=lambda r: r["images_per_s"], default=None)
                fp32 = [(c, e) for c, e in fp32 if best is not None and c.name == best["row"]]
            for cand, engine in fp32:
                streaming = engine.for_batch(1) if isinstance(engine, _StaticBatch) else engine
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
              "rows": rows, "not_available": unavailable, "runtime": runtime_rows, "consistency": consistency}
    write_outputs(settings.out, result, log)
    return result


def round_robin(engines: list, ws: torch.Tensor, *, device: str, warmup: int, iters: int, min_seconds: float,
                max_seconds: float = 30.0) -> list[list[float]]:
    """Seconds per ``run`` of each engine, timed one run of each in turn (order rotated every round): at least
    ``iters`` rounds and ``min_seconds`` per engine on average (at most 1000 rounds), cut short after
    ``max_seconds`` per engine once 3 rounds are in. Each run is synchronised before the clock is read."""
    inputs = [ws.to(e.info.device) for e in engines]
    for e, x in zip(engines, inputs):
        for _ in range(warmup):
            e.run(x)
    sync(device)
    times: list[list[float]] = [[] for _ in engines]
    start = time.perf_counter()
    rounds = 0
    n = max(len(engines), 1)
    while True:
        spent = (time.perf_counter() - start) / n
        if rounds >= 3 and spent > max_seconds:
            break
        if rounds >= iters and (spent >= min_seconds or rounds >= 1000):
            break
        order = list(range(len(engines)))
        k = rounds % n
        for i in order[k:] + order[:k]:
            t0 = time.perf_counter()
            engines[i].run(inputs[i])
            sync(device)
            times[i].append(time.perf_counter() - t0)
        rounds += 1
    return times


def _speedups(rows: list[dict]) -> None:
    base = {(r["model"], r["batch"]): r for r in rows if r["baseline"]}
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["speedup"] = r["images_per_s"] / b["images_per_s"] if b else None


REPEATED_ROW = {"cpu": "torch eager, fast CPU plan", "cuda": "torch cuda fp16 + CUDA graphs"}


def _repeat_row(G, rows, model, ws_all, settings, log) -> dict | None:
    """Time one row again at batch 1 with a fresh engine (PyTorch's fast CPU plan; on CUDA fp16 with graphs):
    two runs of the same row should agree within their spread; the JSON says whether they did."""
    from .engines.factory import open_engine

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

    from .pipeline.directions import random_directions
    from .runtime import NullSink, stream

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


# ---------------------------------------------------------------- output


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
        lines.append(f"| {r['model']} | {r['row']} | {r['precision']} | {r['batch']} | {r['images_per_s']:.3f} | "
                     f"{r['ms_per_batch']:.1f} ({r['ms_p10']:.1f}-{r['ms_p90']:.1f}) | "
                     f"{r['speedup']:.2f}x | {frac} | {lat} | {r.get('engine_peak_mib', 0):.0f} | "
                     f"{r['build_s']:.1f} | {err} |")
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


def line_chart(path: Path, result: dict) -> Path:
    """images/s against batch size, one line per (model, engine), drawn with Pillow (log-scale y)."""
    from PIL import Image, ImageDraw

    from .imaging import save_png

    series: dict[str, list[tuple[int, float]]] = {}
    for r in result["rows"]:
        series.setdefault(f"{r['model']} {r['row']} {r['precision']}", []).append((r["batch"], r["images_per_s"]))
    width, height, left, bottom = 900, 420 + 14 * len(series), 70, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), f"images/s against batch: {result['device']}", fill="black")
    plot_h = 300
    batches = sorted({b for s in series.values() for b, _ in s}) or [1]
    values = [v for s in series.values() for _, v in s] or [1.0]
    lo, hi = math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1
    x_of = {b: left + 40 + i * (width - left - 80) / max(len(batches) - 1, 1) for i, b in enumerate(batches)}

    def y_of(v: float) -> float:
        return 30 + plot_h - (math.log10(v) - lo) / (hi - lo) * plot_h

    draw.line([(left, 30), (left, 30 + plot_h), (width - 20, 30 + plot_h)], fill="black")
    for b in batches:
        draw.text((x_of[b] - 4, 36 + plot_h), str(b), fill="black")
    for exp in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** exp
            if lo <= math.log10(v) <= hi:
                draw.text((8, y_of(v) - 6), f"{v:g}", fill="black")
                draw.line([(left - 4, y_of(v)), (left, y_of(v))], fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    for i, (label, pts) in enumerate(series.items()):
        color = palette[i % len(palette)]
        pts = sorted(pts)
        xy = [(x_of[b], y_of(v)) for b, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        ly = 30 + plot_h + bottom - 10 + 14 * i
        draw.rectangle([left, ly + 3, left + 10, ly + 11], fill=color)
        draw.text((left + 16, ly), label, fill="black")
    draw.text((width // 2 - 20, 50 + plot_h), "batch", fill="black")
    return save_png(path, np.asarray(img))


def result_stem(result: dict) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in result["device"])
    tag = result.get("settings", {}).get("tag")
    return f"{safe}-{result['date'][:10]}" + (f"-{tag}" if tag else "")


def write_outputs(out_dir: Path, result: dict, log: Callable[[str], None] = print) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=True))
    lines = markdown(result)
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if result["rows"]:
        line_chart(out_dir / f"{stem}.png", result)
    log("\n".join(lines))
    log(f"wrote {out_dir / stem}.json, .md" + (", .png" if result["rows"] else ""))
    return out_dir / f"{stem}.json"


def parse_list(text: str, allowed=None, kind=str) -> list:
    items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ConfigError(f"unknown {bad}; choose from {list(allowed)}")
    return items


# ---------------------------------------------------------------- command line (bench/run.py, stylemotion bench)


def add_arguments(p) -> None:
    p.add_argument("--model", default="ffhq-256", help="comma-separated checkpoints / built-in names / tiny-32")
    p.add_argument("--backend", default=",".join(BACKENDS), help=f"comma-separated, of {','.join(BACKENDS)}")
    p.add_argument("--precision", default="fp32,fp16,bf16", help=f"comma-separated, of {','.join(PRECISIONS)}")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    p.add_argument("--iters", type=int, default=10, help="at least this many timed runs per row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=3.0, help="and at least this long per row")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every backend (default: torch's)")
    p.add_argument("--quick", action="store_true",
                   help="batch 1, 3 runs, no realtime stream, no ONNX Runtime CPU-plan row: under 2 minutes")
    p.add_argument("--no-runtime", action="store_true", help="skip the end-to-end runtime rows")
    p.add_argument("--tag", default="", help="appended to the results' file name (<device>-<date>-<tag>.json)")
    p.add_argument("--out", default="bench/results", help="results folder (default bench/results)")


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; CUDA asked for where there is none is a ConfigError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here")
    return device


def settings_from_args(args) -> Settings:
    s = Settings(models=parse_list(args.model), backends=parse_list(args.backend, BACKENDS),
                 precisions=parse_list(args.precision, PRECISIONS), batches=parse_list(args.batch, kind=int),
                 device=pick_device(args.device), iters=args.iters, warmup=args.warmup,
                 min_seconds=args.min_seconds, threads=args.threads, quick=args.quick,
                 runtime=not args.no_runtime, out=Path(args.out), tag=args.tag)
    if args.quick:
        s.batches, s.iters, s.warmup, s.min_seconds = [1], 3, 1, 0.0
    return s
