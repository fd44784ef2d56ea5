"""Generator throughput: images/s and latency per batch, for each batch size and precision asked.

    python bench/run.py --model ffhq-256 --device cpu --batch 1,4 --precision fp32
    python bench/run.py --model ffhq-1024 --device cuda --batch 1,8,32 --precision fp32,fp16
    python bench/run.py --model tiny-32 --device cpu --batch 1 --iters 1     # a dry run in seconds

``--model`` takes a checkpoint, a built-in name (ffhq-256/512/1024), or ``tiny-32``: a benchmark-only name for
the built-in config shrunk to 32x32 (narrow, 2 mapping layers, seeded random weights), so that every script can
be dry-run on a CPU in seconds (``STYLEMOTION_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh``); its figures
measure nothing.

Writes ``bench/results/<device>-<date>.json`` and a markdown table beside it (``--out`` changes the folder).
Timings on CUDA are taken with CUDA events around each batch after warm-up; on the CPU with perf_counter.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylemotion.atomic import atomic_path  # noqa: E402
from stylemotion.checkpoints import load_generator  # noqa: E402


# The dry-run model: ffhq-256's config with these overrides (seeded random weights, like every built-in name).
TINY_MODEL = "tiny-32"
TINY_OVERRIDES = dict(img_resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=32)


def load_model(name: str, device: str = "cpu"):
    """A generator for ``--model``: a checkpoint, a built-in name, or ``tiny-32`` (see the module docstring)."""
    if name == TINY_MODEL:
        return load_generator("ffhq-256", config=TINY_OVERRIDES, device=device)
    return load_generator(name, device=device)


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device asked for on a machine without CUDA is an
    error here, not a crash later."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here")
    return device


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def write_results(out_dir: Path, stem: str, result: dict, lines: list[str]) -> None:
    """``<stem>.json`` (the figures) and ``<stem>.md`` (the table), each written atomically."""
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / stem}.json and .md")


def time_batches(G, batch: int, precision: str, iters: int, warmup: int, device: str) -> list[float]:
    ws = G.mapping(torch.randn(batch, G.z_dim, device=device), truncation_psi=0.7)
    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                G.synthesis(ws, precision=precision)
                end.record()
                end.synchronize()
                elapsed = start.elapsed_time(end) / 1e3
            else:
                t0 = time.perf_counter()
                G.synthesis(ws, precision=precision)
                elapsed = time.perf_counter() - t0
            if i >= warmup:
                times.append(elapsed)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256", help="checkpoint, built-in name or tiny-32 (default ffhq-256)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16, auto")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_model(args.model, device=device)
    rows = []
    for precision in args.precision.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = time_batches(G, batch, precision, args.iters, args.warmup, device)
            med = statistics.median(times)
            row = {"precision": precision, "batch": batch, "median_s": med, "min_s": min(times),
                   "max_s": max(times), "images_per_s": batch / med}
            if device.startswith("cuda"):
                row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
            rows.append(row)
            print(f"{args.model} {device} {precision} batch {batch}: {batch / med:.2f} images/s "
                  f"(median {med * 1e3:.1f} ms per batch)", flush=True)
    name = device_name(device)
    result = {"model": args.model, "random_weights": G.checkpoint_info.random_weights, "device": name,
              "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "iters": args.iters, "warmup": args.warmup, "rows": rows}
    out_dir = Path(args.out)
    stem = f"{name.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    lines = [f"# {args.model} on {name} (torch {torch.__version__})", "",
             "| precision | batch | images/s | median ms/batch | min ms | max ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['images_per_s']:.2f} | {r['median_s'] * 1e3:.1f} | "
              f"{r['min_s'] * 1e3:.1f} | {r['max_s'] * 1e3:.1f} |" for r in rows]
    write_results(out_dir, stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
