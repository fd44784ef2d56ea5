"""The distillation objectives side by side: each trained for the same time from the same start, then measured on
the same held-out z (issue 29: "a model can be close in L1 and still blurred").

    python bench/distill_objectives.py --minutes 7                       # recon, both, perceptual from digiface-64
    python bench/distill_objectives.py --minutes 1 --objectives recon,perceptual --device cuda --args "--batch 256"

Every run is ``stylemotion distill --init INIT --objective O --seconds S --snapshot`` in ``WORK/O`` (resumable: the
same command continues each run where it stopped). Each run's ``report.json`` gives PSNR against the teacher, FER
argmax agreement and sharpness (the Laplacian energy of student over teacher, median; 1 is as sharp as the teacher).
Writes ``bench/results/distill-objectives-<tag>.json`` and ``.md`` (one row per objective, and the start's own row).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylemotion.cli import main as cli  # noqa: E402


def measure_start(init: str, n: int, teacher: str | None, classifier: str | None) -> dict:
    """The start's own figures (``--init``), on the same held-out z as every run's report."""
    from stylemotion.checkpoints import load_generator
    from stylemotion.pipeline.distill import load_classifier, load_teacher
    from stylemotion.runtime.jobs import compare_to_teacher

    G = load_generator(init)
    return compare_to_teacher(G, load_teacher(teacher), load_classifier(classifier), n=n, batch=min(50, n))


def row(name: str, r: dict, kimg: float | None, seconds: float | None) -> str:
    kimg_text = "-" if kimg is None else f"{kimg:.1f}"
    secs = "-" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | {kimg_text} | {secs} | {r['psnr_mean']:.2f} | {r['psnr_p10']:.2f} | "
            f"{r['fer_agreement']:.1%} | {r['sharpness_ratio']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", default="recon,both,perceptual")
    p.add_argument("--init", default="digiface-64", help="the start of every run (a generator or train-state.pt)")
    p.add_argument("--minutes", type=float, default=7.0, help="training time per objective")
    p.add_argument("--work", default="runs/objectives", help="one run folder per objective under here")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--teacher", default=None)
    p.add_argument("--classifier", default=None)
    p.add_argument("--args", default="", help="more `stylemotion distill` arguments for every run, e.g. "
                   "\"--lr 3e-3 --perceptual-weight 0.05\"")
    p.add_argument("--tag", default=None, help="the results' name (default: the date)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    if args.minutes <= 0:
        raise SystemExit(f"--minutes must be positive, got {args.minutes}")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    work = Path(args.work)
    extra = shlex.split(args.args)
    weights = [*(["--teacher", args.teacher] if args.teacher else []),
               *(["--classifier", args.classifier] if args.classifier else [])]
    threads = ["--threads", str(args.threads)] if args.threads else []
    results: dict = {"init": args.init, "minutes": args.minutes, "device": args.device, "args": args.args,
                     "eval_n": args.eval_n, "runs": {}}
    results["start"] = measure_start(args.init, args.eval_n, args.teacher, args.classifier)
    for objective in objectives:
        out = work / objective
        argv_ = ["distill", "--out", str(out), "--objective", objective, "--seconds", str(args.minutes * 60),
                 "--snapshot", "--quiet", "--device", args.device, "--eval-n", str(args.eval_n), *threads,
                 *weights, *extra]
        if not (out / "train-state.pt").is_file():
            argv_ += ["--init", args.init]
        print("$ stylemotion " + " ".join(argv_), flush=True)
        if cli(argv_) != 0:
            raise SystemExit(f"the {objective} run failed")
        results["runs"][objective] = json.loads((out / "report.json").read_text())
    tag = args.tag or datetime.date.today().isoformat()
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"distill-objectives-{tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Distillation objectives, {args.minutes:g} min each from `{args.init}` ({args.device}; "
             f"`{args.args or 'defaults'}`)", "",
             f"Held-out z: {args.eval_n}. Sharpness: Laplacian energy of the student over the teacher's (median; "
             "1 = as sharp as the teacher).", "",
             "| objective | kimg trained | seconds | PSNR mean (dB) | PSNR p10 | FER agreement | sharpness |",
             "|---|---|---|---|---|---|---|",
             row(f"start ({args.init})", results["start"], None, None)]
    for objective, r in results["runs"].items():
        this = r.get("this_call", {})
        lines.append(row(objective, r, this.get("kimg"), this.get("seconds")))
    text = "\n".join(lines) + "\n"
    (dest / f"distill-objectives-{tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
