"""The command line shared by ``bench/run.py`` and ``stylemotion bench``: arguments, checked settings."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from .rows import BACKENDS, PRECISIONS
from .sweep import Settings

__all__ = ["add_arguments", "parse_list", "pick_device", "settings_from_args"]


def parse_list(text: str, allowed=None, kind=str) -> list:
    items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ConfigError(f"unknown {bad}; choose from {list(allowed)}")
    return items


def add_arguments(p) -> None:
    p.add_argument("--model", default="ffhq-256", help="comma-separated checkpoints / built-in names / tiny-32")
    p.add_argument("--backend", default=",".join(BACKENDS),
                   help=f"comma-separated, of {','.join(BACKENDS)} (auto: the engine open_engine picks here)")
    p.add_argument("--precision", default="fp32,fp16,bf16", help=f"comma-separated, of {','.join(PRECISIONS)}")
    p.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    p.add_argument("--iters", type=int, default=10, help="at least this many timed runs per row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=3.0, help="and at least this long per row")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every backend (default: torch's)")
    p.add_argument("--quick", action="store_true",
                   help="batch 1, 3 runs, no realtime stream, no ONNX Runtime CPU-plan row: about 2 minutes")
    p.add_argument("--no-runtime", action="store_true", help="skip the end-to-end runtime rows")
    p.add_argument("--tag", default="", help="appended to the results' file name (<device>-<date>-<tag>.json)")
    p.add_argument("--out", default="bench/results", help="results folder (default bench/results)")
    p.add_argument("--cache", default=None, help="engine cache folder for the auto row's measured choice (default "
                                                 "$STYLEMOTION_CACHE_DIR, else ~/.cache/stylemotion)")


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
                 runtime=not args.no_runtime, out=Path(args.out), tag=args.tag,
                 cache_dir=Path(args.cache) if getattr(args, "cache", None) else None)
    if args.quick:
        s.batches, s.iters, s.warmup, s.min_seconds = [1], 3, 1, 0.0
    return s
