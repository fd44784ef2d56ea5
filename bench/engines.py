"""Images/s of each engine available here on the same model and ws (ONNX Runtime vs PyTorch on the CPU; on a
GPU also PyTorch fp16 and fp16 + CUDA graphs, and ONNX Runtime CUDA when onnxruntime-gpu is installed).

    python bench/engines.py --model ffhq-256 --batch 1,4
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import device_name, write_results  # noqa: E402
from stylemotion.checkpoints import load_generator  # noqa: E402
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256")
    p.add_argument("--batch", default="1,4")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--onnx", default=None, help="synthesis.onnx of this model (default: export it now)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    G = load_generator(args.model)
    onnx_path = args.onnx
    if onnx_path is None:
        t0 = time.perf_counter()
        onnx_path = export_onnx(synthesis_spec(G), tempfile.mkdtemp(prefix="stylemotion-bench-"), batches=[1, 2])
        print(f"exported and verified {onnx_path} in {time.perf_counter() - t0:.0f} s", flush=True)
    configs = [("torch cpu fp32", dict(backend="torch", device="cpu")),
               ("onnxruntime cpu fp32", dict(backend="onnxruntime", device="cpu", onnx_path=onnx_path))]
    if torch.cuda.is_available():
        configs += [("torch cuda fp32", dict(backend="torch", device="cuda", precision="fp32", cuda_graphs=False)),
                    ("torch cuda fp16", dict(backend="torch", device="cuda", precision="fp16", cuda_graphs=False)),
                    ("torch cuda fp16 + graphs", dict(backend="torch", device="cuda", precision="fp16",
                                                      cuda_graphs=True)),
                    ("onnxruntime cuda fp32", dict(backend="onnxruntime", device="cuda", onnx_path=onnx_path))]
    rows = []
    for name, kwargs in configs:
        try:
            engine = open_engine(G, **kwargs)
        except EngineError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        for batch in (int(b) for b in args.batch.split(",")):
            ws = G.mapping(torch.randn(batch, G.z_dim), truncation_psi=0.7).to(engine.info.device)
            sec = time_engine(engine, ws, args.iters)
            rows.append({"engine": name, "batch": batch, "s_per_batch": sec, "images_per_s": batch / sec})
            print(f"{name} batch {batch}: {batch / sec:.2f} images/s", flush=True)
    dev = device_name("cuda" if torch.cuda.is_available() else "cpu")
    result = {"model": args.model, "device": dev, "torch": torch.__version__, "rows": rows,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    lines = [f"# Engines: {args.model} on {dev}", "", "| engine | batch | images/s |", "|---|---|---|"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['images_per_s']:.2f} |" for r in rows]
    stem = f"engines-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    write_results(Path(args.out), stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
