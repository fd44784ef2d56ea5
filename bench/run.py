"""Every engine side by side: ``python bench/run.py`` (also ``make bench`` and ``stylemotion bench``).

    python bench/run.py --quick                                   # about 2 minutes on 2 CPU cores
    python bench/run.py --model ffhq-256,ffhq-1024 --batch 1,4 --threads 2
    python bench/run.py --backend torch,onnxruntime,openvino,tensorrt --precision fp32,fp16,bf16 \\
        --batch 1,4,8,16,32 --model ffhq-256,ffhq-512,ffhq-1024 --device cuda
    python bench/run.py --model tiny-32 --quick                   # a dry run in seconds (figures measure nothing)

``--model`` takes checkpoints and built-in names, comma-separated; ``tiny-32`` is ffhq-256's config shrunk to
32x32 (seeded random weights), for dry runs. What is measured and how: ``stylemotion/benchmark.py``. Writes
``bench/results/<device>-<date>.json`` (top-level ``rows``, each with ``speedup`` against the baseline row), a
markdown table and a PNG chart beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylemotion.atomic import atomic_path  # noqa: E402
from stylemotion.benchmark import (BACKENDS, PRECISIONS, TINY_MODEL, TINY_OVERRIDES, Settings,  # noqa: E402,F401
                                   device_name, load_model, parse_list, run)


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; a CUDA device asked for on a machine without CUDA is an
    error here, not a crash later."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here")
    return device


def write_results(out_dir: Path, stem: str, result: dict, lines: list[str]) -> None:
    """``<stem>.json`` (the figures) and ``<stem>.md`` (the table), each written atomically (the other bench
    scripts' writer)."""
    import json

    with atomic_path(out_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / stem}.json and .md")


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256", help="comma-separated checkpoints / built-in names / tiny-32")
    p.add_argument("--backend", default=",".join(BACKENDS), help=f"comma-separated, of {','.join(BACKENDS)}")
    p.add_argument("--precision", default="fp32,fp16,bf16", help=f"comma-separated, of {','.join(PRECISIONS)}")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    p.add_argument("--iters", type=int, default=10, help="at least this many timed runs per row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=3.0, help="and at least this long per row")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every backend (default: torch's)")
    p.add_argument("--quick", action="store_true", help="batch 1, 3 runs, no realtime stream: about 2 minutes")
    p.add_argument("--no-runtime", action="store_true", help="skip the end-to-end runtime rows")
    p.add_argument("--tag", default="", help="appended to the results' file name (<device>-<date>-<tag>.json)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    return p


def settings_from(args) -> Settings:
    s = Settings(models=parse_list(args.model), backends=parse_list(args.backend, BACKENDS),
                 precisions=parse_list(args.precision, PRECISIONS), batches=parse_list(args.batch, kind=int),
                 device=pick_device(args.device), iters=args.iters, warmup=args.warmup,
                 min_seconds=args.min_seconds, threads=args.threads, quick=args.quick,
                 runtime=not args.no_runtime, out=Path(args.out), tag=args.tag)
    if args.quick:
        s.batches, s.iters, s.warmup, s.min_seconds = [1], 3, 1, 0.0
    return s


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    result = run(settings_from(args), log=lambda m: print(m, flush=True))
    return 0 if result["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
