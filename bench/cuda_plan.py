"""The GPU inference plan against today's reference engine, side by side in one process (bench/gpu_check.sh).

    python bench/cuda_plan.py --device cuda                 # 1024² at batch 1/8/32 and 256² at 1/32, ~2 minutes
    python bench/cuda_plan.py --device cpu --model tiny-32  # the dry run: same rows, float32, tiny model

Rows (each through ``TorchEngine``, CUDA graphs on a GPU): the reference network (``plan="reference"``) in fp32
and fp16 (the engine before the plan), then the plan (``plan="cuda"``) in fp32, fp16 with the official FP16
blocks, fp16 in every block, and fp16 with the ``torch.compile`` epilogue. Timed with CUDA events per batch
(p50/p99 and images/s). Quality: PSNR of each fp16 path against float32 without TF32 on the same latents. Profile:
the top CUDA kernels of the plan at the largest model and batch (``torch.profiler``, eager so that kernels show).
Writes ``cuda_plan-<device>-<date>.json`` and ``.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import device_name, load_model, pick_device, write_results  # noqa: E402
from stylemotion.engines.torch_engine import TorchEngine  # noqa: E402

# Measured on an H200 with the official NVlabs code (stylegan2-ada-pytorch, its own CUDA plugins, config-f,
# num_fp16_res=4, conv_clamp=256, synthesis only), 2026-12-04, ms per batch (issue 30): the bar this plan is held to.
OFFICIAL_FP16_MS = {("ffhq-1024", 1): 17.3, ("ffhq-1024", 8): 40.5, ("ffhq-1024", 32): 106.0,
                    ("ffhq-256", 1): 23.0, ("ffhq-256", 32): 39.7}

VARIANTS = {  # name -> TorchEngine options
    "reference fp32": dict(plan="reference", precision="fp32"),
    "reference fp16": dict(plan="reference", precision="fp16"),
    "plan fp32": dict(plan="cuda", precision="fp32"),
    "plan fp16": dict(plan="cuda", precision="fp16", epilogue="eager"),
    "plan fp16 all blocks": dict(plan="cuda", precision="fp16", fp16_blocks="all", epilogue="eager"),
    "plan fp16 compiled epilogue": dict(plan="cuda", precision="fp16", epilogue="compile"),
    "plan fp16 all blocks compiled": dict(plan="cuda", precision="fp16", fp16_blocks="all", epilogue="compile"),
}


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_engine(engine, ws: torch.Tensor, *, min_seconds: float, max_iters: int) -> list[float]:
    """Milliseconds per ``run`` (CUDA events on a GPU, the wall clock on the CPU), after a warm-up."""
    device = engine.info.device
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for _ in range(3):
            engine.run(ws)
        _sync(device)
        times: list[float] = []
        t_end = time.perf_counter() + min_seconds
        while len(times) < max_iters and (time.perf_counter() < t_end or len(times) < 3):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                engine.run(ws)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                engine.run(ws)
                times.append((time.perf_counter() - t) * 1e3)
    return times


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).square().mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


@contextlib.contextmanager
def no_tf32():
    """Float32 as float32: cuDNN and cuBLAS may otherwise run 'fp32' convolutions and products in TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def profile_top(engine, ws: torch.Tensor, top: int = 12) -> list[dict]:
    """The kernels that take the most device time in three eager forwards (share of the total)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = engine.info.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        engine.run(ws)
        _sync(engine.info.device)
        with profile(activities=activities) as prof:
            for _ in range(3):
                engine.run(ws)
            _sync(engine.info.device)
    if cuda:  # the kernels themselves (operators also carry their kernels' device time: counted twice)
        kernel = torch.autograd.DeviceType.CUDA
        events = [e for e in prof.key_averages() if getattr(e, "device_type", None) == kernel
                  and e.self_device_time_total > 0]
        if not events:  # an older profiler without device_type on averages
            events = [e for e in prof.key_averages() if e.self_device_time_total > 0 and e.self_cpu_time_total == 0]
    else:
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    key = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(key(e) for e in events) or 1.0
    events.sort(key=key, reverse=True)
    return [{"kernel": e.key[:120], "ms": key(e) / 1e3 / 3, "share": key(e) / total, "calls": e.count // 3}
            for e in events[:top]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default=None, help="one model for every row (default: ffhq-1024 and ffhq-256)")
    p.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ("plan fp16", "plan fp16 all blocks")),
                   help="rows to run (default: all but the eager-epilogue fp16 plans, measured slower at every "
                        "batch on an H200: bench/results/cuda_plan-*-eager.md)")
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.startswith("cuda")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    if not cuda:  # the dry run: float32 rows only (FP16 convolutions on a CPU measure nothing), no compile
        variants = [v for v in variants if VARIANTS[v]["precision"] == "fp32"]
    if args.model:
        plan_of = {args.model: {v: (1, 2) for v in variants}}
    else:
        big = {"reference fp32": (1, 8, 32), "reference fp16": (1, 8, 32), "plan fp32": (8, 32),
               "plan fp16": (1, 32), "plan fp16 all blocks": (32,), "plan fp16 compiled epilogue": (1, 8, 32),
               "plan fp16 all blocks compiled": (1, 8, 32)}
        small = {"reference fp16": (1, 32), "plan fp16": (32,), "plan fp16 compiled epilogue": (1, 32),
                 "plan fp16 all blocks compiled": (32,)}
        plan_of = {"ffhq-1024": {v: big[v] for v in variants if v in big},
                   "ffhq-256": {v: small[v] for v in variants if v in small}}
    rows, quality, profiles, failures = [], [], {}, []
    for model, table in plan_of.items():
        G = load_model(model)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            ws_all = G.mapping(torch.randn(max(max(b) for b in table.values()), G.z_dim, generator=gen),
                               truncation_psi=0.7).to(device)
        reference = None
        for name, batches in table.items():
            opts = VARIANTS[name]
            try:
                engine = TorchEngine(G, device=device, cuda_graphs=cuda, max_batch=64, **opts)
            except Exception as exc:  # noqa: BLE001 - a variant that cannot be built is reported, not fatal
                failures.append(f"{model} {name}: {type(exc).__name__}: {exc}")
                print(f"{model} {name}: FAILED to build: {exc}", flush=True)
                continue
            for batch in batches:
                try:
                    ms = time_engine(engine, ws_all[:batch], min_seconds=args.min_seconds, max_iters=args.max_iters)
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{model} {name} batch {batch}: {type(exc).__name__}: {exc}")
                    print(f"{model} {name} batch {batch}: FAILED: {exc}", flush=True)
                    continue
                p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
                row = {"model": model, "engine": name, "batch": batch, "ms_p50": p50, "ms_p99": p99,
                       "ms_mean": float(np.mean(ms)), "images_per_s": batch * 1e3 / float(np.mean(ms)),
                       "iters": len(ms), "detail": engine.info.detail}
                official = OFFICIAL_FP16_MS.get((model, batch))
                if official is not None and name.startswith("plan fp16"):
                    row["vs_official_fp16"] = official / row["ms_mean"]
                rows.append(row)
                print(f"{model} {name} batch {batch}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                      f"{row['images_per_s']:.0f} images/s", flush=True)
            # Quality on 4 latents against float32 (no TF32), rendered by the reference network.
            q_ws = ws_all[:4]
            with torch.inference_mode():
                if reference is None:
                    with no_tf32():
                        ref_engine = TorchEngine(G, device=device, plan="reference", precision="fp32")
                        reference = ref_engine.run(q_ws).float().clone()
                    del ref_engine
                out = engine.run(q_ws).float()
            quality.append({"model": model, "engine": name, "psnr_db": psnr(out, reference)})
            if not args.no_profile and name == "plan fp16 compiled epilogue" and model == next(iter(plan_of)):
                eager = TorchEngine(G, device=device, cuda_graphs=False, **opts)
                profiles[f"{model} {name} batch {max(batches)}"] = profile_top(eager, ws_all[:max(batches)])
                del eager
            del engine
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        if not cuda and not args.no_profile and args.model:  # the dry run profiles its plan too
            eager = TorchEngine(G, device=device, plan="cuda", precision="fp32")
            profiles[f"{model} plan fp32 batch 2"] = profile_top(eager, ws_all[:2])
    dev = device_name(device)
    result = {"device": dev, "rows": rows, "quality": quality, "profiles": profiles, "failures": failures,
              "official_fp16_ms": {f"{m} batch {b}": v for (m, b), v in OFFICIAL_FP16_MS.items()},
              "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/cuda_plan.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = [f"# The CUDA plan against the reference engine on {dev}", "",
             "| model | engine | batch | p50 ms | p99 ms | images/s | x official fp16 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f"{r['vs_official_fp16']:.2f}" if "vs_official_fp16" in r else ""
        lines.append(f"| {r['model']} | {r['engine']} | {r['batch']} | {r['ms_p50']:.2f} | {r['ms_p99']:.2f} | "
                     f"{r['images_per_s']:.0f} | {vs} |")
    lines += ["", "| model | engine | PSNR vs fp32 (dB) |", "|---|---|---|"]
    lines += [f"| {q['model']} | {q['engine']} | {q['psnr_db']:.1f} |" for q in quality]
    for title, top in profiles.items():
        lines += ["", f"Top kernels, {title}:", "", "| kernel | ms per forward | share | calls |", "|---|---|---|---|"]
        lines += [f"| `{k['kernel']}` | {k['ms']:.2f} | {k['share'] * 100:.1f} % | {k['calls']} |" for k in top]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
    lines += ["", "Official fp16 (NVlabs code, same H200, 2026-12-04): " + ", ".join(
        f"{m} batch {b}: {v} ms" for (m, b), v in OFFICIAL_FP16_MS.items()), "", f"`{result['command']}`"]
    stem = f"cuda_plan-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}"
    write_results(Path(args.out), stem, result, lines)
    print("\n".join(lines[:len(rows) + 3]))
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
