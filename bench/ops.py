"""cpp_ext's kernels against the PyTorch references they replace (eager, and torch.compile'd), at streaming sizes,
as effective bandwidth next to this device's measured copy bandwidth.

    python -m stylemotion.extension build && python bench/ops.py                     # CPU
    python -m stylemotion.extension build --cuda && python bench/ops.py --device cuda

Sizes: fused_lerp for 18x512 (ffhq-1024) and 14x512 latents, N = 8 and 32, linear and Hermite; to_uint8 for 8 images
of 1024², 256² and 64² (float32 and float16); acd over 8 uint8 frames of the same sizes. Bytes counted are those
each op must move at least (inputs read once, outputs written once). Writes
``bench/results/ops-<device>-<date>.json``, a markdown table and a PNG chart.
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

from bench.run import device_name, pick_device, write_results  # noqa: E402
from stylemotion import ops  # noqa: E402


def timed(fn, *, device: str, min_seconds: float = 0.3) -> float:
    """Seconds per call (after a warm-up), repeated for at least ``min_seconds``."""
    cuda = device.startswith("cuda")
    fn()
    if cuda:
        torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and calls >= 3:
            return elapsed / calls


def copy_bandwidth(device: str) -> float:
    """GB/s of a plain 256 MiB tensor copy (read + write counted)."""
    src = torch.empty(64 * 2 ** 20, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    sec = timed(lambda: dst.copy_(src), device=device)
    return 2 * src.numel() * 4 / sec / 1e9


def cases(device: str, kind: str):
    """(name, bytes moved, {impl: fn}) per benchmark case."""
    g = torch.Generator().manual_seed(0)
    for num_ws in (18, 14):
        for n in (8, 32):
            keys = torch.randn(9, num_ws, 512, generator=g).to(device)
            tangents = torch.randn(9, num_ws, 512, generator=g).to(device)
            index = torch.randint(0, 8, (n,), generator=g).to(device)
            t = torch.rand(n, generator=g).to(device)
            span = torch.full((n,), 15.0, device=device)
            size = num_ws * 512 * 4
            for form, kw, reads in (("linear", {}, 2), ("hermite", dict(tangents=tangents, span=span), 4)):
                yield (f"fused_lerp {form} {n}x{num_ws}x512", n * size * (reads + 1),
                       {impl: (lambda impl=impl, kw=kw: ops.fused_lerp(keys, index, t, impl=impl, **kw))
                        for impl in ("reference", kind)},
                       (lambda kw=kw: ops.fused_lerp(keys, index, t, impl="reference", **kw)))
    for res in (1024, 256, 64):
        for dtype in (torch.float32, torch.float16):
            images = (torch.randn(8, 3, res, res, generator=g) * 1.2).to(device, dtype)
            moved = images.numel() * images.element_size() + images.numel()
            yield (f"to_uint8 8x3x{res}² {str(dtype).split('.')[1]}", moved,
                   {impl: (lambda impl=impl, images=images: ops.to_uint8(images, impl=impl))
                    for impl in ("reference", kind)},
                   (lambda images=images: ops.to_uint8(images, impl="reference")))
        frames = torch.randint(0, 256, (8, res, res, 3), dtype=torch.uint8, generator=g).to(device)
        yield (f"acd 8x{res}²x3 uint8", frames.numel(),
               {impl: (lambda impl=impl, frames=frames: ops.acd(frames, impl=impl)) for impl in ("reference", kind)},
               (lambda frames=frames: ops.acd(frames, impl="reference")))


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
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd references")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", default=None, help="only cases whose name contains this")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if not ops.available()[kind]:
        raise SystemExit(f"the {kind} kernels are not built: python -m stylemotion.extension build"
                         f"{' --cuda' if kind == 'cuda' else ''}")
    copy = copy_bandwidth(device)
    print(f"{device_name(device)}: copy bandwidth {copy:.1f} GB/s", flush=True)
    rows = []
    for name, moved, fns, reference in cases(device, kind):
        if args.only and args.only not in name:
            continue
        row = {"op": name, "bytes": moved}
        row["reference_s"] = timed(fns["reference"], device=device)
        row["ext_s"] = timed(fns[kind], device=device)
        if not args.no_compile:
            compiled = torch.compile(reference, dynamic=False)
            row["compiled_s"] = timed(compiled, device=device)
        for key in ("reference", "ext", "compiled"):
            if f"{key}_s" in row:
                row[f"{key}_gbs"] = moved / row[f"{key}_s"] / 1e9
        row["ext_vs_copy"] = row["ext_gbs"] / copy
        row["speedup_vs_reference"] = row["reference_s"] / row["ext_s"]
        rows.append(row)
        print(f"{name}: ext {row['ext_gbs']:.2f} GB/s ({row['ext_vs_copy']:.0%} of copy), reference "
              f"{row['reference_gbs']:.2f}" + (f", compiled {row['compiled_gbs']:.2f}" if "compiled_gbs" in row else "")
              + f" GB/s; x{row['speedup_vs_reference']:.2f} over the reference", flush=True)
    dev = device_name(device)
    result = {"device": dev, "copy_gbs": copy, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "rows": rows, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/ops.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = [f"# cpp_ext on {dev} (copy bandwidth {copy:.1f} GB/s)", "",
             "| op | ext GB/s | % of copy | reference GB/s | compiled GB/s | ext speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['ext_gbs']:.2f} | {r['ext_vs_copy']:.0%} | {r['reference_gbs']:.2f} | "
              f"{r.get('compiled_gbs', float('nan')):.2f} | x{r['speedup_vs_reference']:.2f} |" for r in rows]
    lines += ["", f"`{result['command']}`"]
    stem = f"ops-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}"
    out = Path(args.out)
    write_results(out, stem, result, lines)
    chart(out / f"{stem}.png", [r["op"] for r in rows], [r["speedup_vs_reference"] for r in rows],
          title=f"cpp_ext against the PyTorch reference on {dev}",
          xlabel="speed-up over the reference (higher is faster)", reference=1.0, reference_label="reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
