"""Every engine side by side: ``python bench/run.py`` (also ``make bench`` and ``stylemotion bench``).

    python bench/run.py --quick                                   # about 2 minutes on 2 CPU cores
    python bench/run.py --model ffhq-256,ffhq-1024 --batch 1,4 --threads 2
    python bench/run.py --backend torch,onnxruntime,openvino,tensorrt --precision fp32,fp16,bf16 \\
        --batch 1,4,8,16,32 --model ffhq-256,ffhq-512,ffhq-1024 --device cuda
    python bench/run.py --model tiny-32 --quick                   # a dry run in seconds (figures measure nothing)
    python bench/run.py --redraw bench/results/AMD_EPYC_x2_threads-2026-11-29.json   # the chart again, no timing

``--model`` takes checkpoints and built-in names, comma-separated; ``tiny-32`` is ffhq-256's config shrunk to
32x32 (seeded random weights), for dry runs. What is measured and how: ``stylemotion/benchmark/``. Writes
``bench/results/<device>-<date>.json`` (top-level ``rows``, each with ``speedup`` against the baseline row; ``auto``:
what ``backend="auto"`` chose and how close it came to the fastest row), a markdown table and a PNG chart beside it
(matplotlib, the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylemotion.atomic import atomic_path  # noqa: E402
from stylemotion.benchmark import (TINY_MODEL, TINY_OVERRIDES, add_arguments, device_name,  # noqa: E402,F401
                                   load_model, run, settings_from_args)


def pick_device(device: str) -> str:
    """``stylemotion.benchmark.pick_device`` for the bench scripts: a CUDA device asked for where there is none
    ends the script with its message."""
    from stylemotion.benchmark import pick_device as pick
    from stylemotion.errors import ConfigError

    try:
        return pick(device)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc


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
    add_arguments(p)
    p.add_argument("--redraw", nargs="+", metavar="JSON", default=None,
                   help="draw the PNG chart of saved results again (<stem>.json -> <stem>.png), no timing")
    p.set_defaults(out=str(Path(__file__).resolve().parent / "results"))
    return p


def main(argv=None) -> int:
    from stylemotion.errors import StylemotionError

    args = parser().parse_args(argv)
    if args.redraw:
        from stylemotion.benchmark import redraw

        try:
            for path in args.redraw:
                print(f"wrote {redraw(path)}")
        except (StylemotionError, OSError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        result = run(settings_from_args(args), log=lambda m: print(m, flush=True))
    except StylemotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if result["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
