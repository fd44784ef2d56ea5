"""Images/s of each engine on one device, on the same model and ws.

``--device cpu``: PyTorch and ONNX Runtime on the CPU. ``--device cuda``: GPU rows only (PyTorch fp32, fp16,
fp16 + CUDA graphs, and ONNX Runtime CUDA where onnxruntime-gpu is installed); no CPU row is timed, so a lent
GPU's minutes go to the GPU. ``--device auto`` (default): cuda when available, else cpu. Each run also times
``auto``: the engine ``open_engine(backend="auto")`` picks at each batch size (measured once, kept in the engine
cache), its row labelled with what it chose.

    python bench/engines.py --model ffhq-256 --batch 1,4
    python bench/engines.py --model ffhq-1024 --device cuda --batch 1,8,32 --iters 10
    python bench/engines.py --model tiny-32 --device cpu --batch 1 --iters 1 --threads 1     # dry run

The generator stays on the CPU: engines render with their own copy on their device, and ws is drawn on the CPU
and moved to each engine's device. ``synthesis.onnx`` is exported (on the CPU) only when an ONNX Runtime row can
run here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import device_name, load_model, pick_device, write_results  # noqa: E402
from stylemotion.benchmark.rows import auto_choice  # noqa: E402
from stylemotion.engines import open_engine  # noqa: E402
from stylemotion.errors import EngineError  # noqa: E402
from stylemotion.export.networks import synthesis_spec  # noqa: E402
from stylemotion.export.onnx_export import export_onnx  # noqa: E402


def time_engine(engine, ws, iters: int) -> float:
    engine.run(ws)  # warm-up (and CUDA graph capture)
    cuda = engine.info.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        engine.run(ws)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def ort_provider_missing(device: str) -> str | None:
    """Why no ONNX Runtime row can run on ``device`` (None: one can)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime

    want = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    have = onnxruntime.get_available_providers()
    return None if want in have else f"this onnxruntime has no {want} (it has {have}; install onnxruntime-gpu)"


def configs(device: str, onnx_path, threads: int | None) -> list[tuple[str, dict]]:
    """(row name, open_engine arguments) for every engine timed on ``device``; ``auto`` is opened per batch size."""
    auto = ("auto", dict(backend="auto", device=device, onnx_path=onnx_path, threads=threads))
    if not device.startswith("cuda"):
        rows = [auto, ("torch cpu fp32", dict(backend="torch", device="cpu"))]
        if onnx_path is not None:
            rows.append(("onnxruntime cpu fp32", dict(backend="onnxruntime", device="cpu", onnx_path=onnx_path,
                                                      threads=threads)))
        return rows
    rows = [("torch cuda fp32", dict(backend="torch", device=device, precision="fp32", cuda_graphs=False)),
            ("torch cuda fp16", dict(backend="torch", device=device, precision="fp16", cuda_graphs=False)),
            ("torch cuda fp16 + graphs", dict(backend="torch", device=device, precision="fp16", cuda_graphs=True))]
    if onnx_path is not None:
        rows.append(("onnxruntime cuda fp32", dict(backend="onnxruntime", device=device, onnx_path=onnx_path)))
    return [auto] + rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256", help="checkpoint, built-in name or tiny-32 (see bench/run.py)")
    p.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    p.add_argument("--batch", default="1,4")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch and ONNX Runtime")
    p.add_argument("--onnx", default=None, help="synthesis.onnx of this model (default: export it now)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    G = load_model(args.model)  # on the CPU; each engine copies it to its device
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", flush=True)
    onnx_path, skipped = args.onnx, []
    missing = ort_provider_missing(device)
    if missing is not None:
        skipped.append({"engine": f"onnxruntime {device}", "reason": missing})
        print(f"onnxruntime {device}: skipped ({missing})", flush=True)
        onnx_path = None
    elif onnx_path is None:
        t0 = time.perf_counter()
        onnx_path = export_onnx(synthesis_spec(G), tempfile.mkdtemp(prefix="stylemotion-bench-"), batches=[1, 2])
        print(f"exported and verified {onnx_path} in {time.perf_counter() - t0:.0f} s", flush=True)
    batches = [int(b) for b in args.batch.split(",")]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # drawn once on the CPU, where G is; moved to each engine's device below
        ws_cpu = {b: G.mapping(torch.randn(b, G.z_dim, generator=gen), truncation_psi=0.7) for b in batches}
    rows = []
    for name, kwargs in configs(device, onnx_path, args.threads):
        engine = None
        for batch in batches:
            try:
                if engine is None or name == "auto":  # auto chooses per batch size
                    engine = open_engine(G, **kwargs, **({"batch": batch} if name == "auto" else {}))
            except EngineError as exc:
                skipped.append({"engine": name, "reason": str(exc)})
                print(f"{name}: skipped ({exc})", flush=True)
                break
            if not engine.info.device.startswith(device.split(":")[0]):
                raise SystemExit(f"{name}: asked for {device}, the engine runs on {engine.info.device}")
            ws = ws_cpu[batch].to(engine.info.device)
            sec = time_engine(engine, ws, args.iters)
            label = f"auto (chose {auto_choice(engine.info.detail)})" if name == "auto" else name
            rows.append({"engine": label, "batch": batch, "s_per_batch": sec, "images_per_s": batch / sec,
                         "device": engine.info.device, "detail": engine.info.detail})
            print(f"{label} batch {batch}: {batch / sec:.2f} images/s", flush=True)
        del engine
    dev = device_name(device)
    result = {"model": args.model, "device": dev, "torch": torch.__version__, "iters": args.iters, "rows": rows,
              "skipped": skipped, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    lines = [f"# Engines: {args.model} on {dev}", "", "| engine | batch | images/s |", "|---|---|---|"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['images_per_s']:.2f} |" for r in rows]
    lines += [f"\nSkipped: {s['engine']}: {s['reason']}" for s in skipped]
    stem = f"engines-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    write_results(Path(args.out), stem, result, lines)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
