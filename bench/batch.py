"""render-batch throughput: jobs per minute in-process, and on Ray with 1 and 2 actors; scaling efficiency.

    python bench/batch.py --model ffhq-256 --jobs 8 --seconds 1 --fps 10
    python bench/batch.py --model tiny-32 --jobs 6                      # a dry run in seconds

Each job is one video (``--seconds`` of two emotions at ``--fps``). Every actor runs one PyTorch thread
(``--threads``), so on a 2-core machine two actors use both cores. Writes
``bench/results/batch-<device>-<date>-<model>.json`` and a markdown table beside it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import device_name, load_model, write_results  # noqa: E402
from stylemotion.checkpoints import save_generator  # noqa: E402
from stylemotion.runtime.batch import Job, Settings, render_batch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per emotion (two per job)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads per worker")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    import ray

    work = Path(tempfile.mkdtemp(prefix="stylemotion-batch-"))
    ckpt = str(save_generator(load_model(args.model), work / "g.safetensors"))
    emotions = ["happy", "sad", "surprise", "angry"]
    jobs = [Job(id=f"j{i:03d}", seed=i, script=f"{emotions[i % 4]}:{args.seconds},neutral:{args.seconds}",
                fps=args.fps) for i in range(args.jobs)]
    settings = Settings(ckpt=ckpt, directions="random", device="cpu", threads=args.threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    for name, kwargs in (("in-process", {}), ("ray, 1 actor", dict(ray_address="local", actors=1)),
                         ("ray, 2 actors", dict(ray_address="local", actors=2))):
        out = work / name.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        result = render_batch(jobs, out, settings, progress=False, log=lambda m: None, **kwargs)
        seconds = time.perf_counter() - t0
        assert result.rendered == len(jobs) and not result.failed, result
        rows.append({"runner": name, "jobs": len(jobs), "seconds": seconds, "jobs_per_minute": 60 * len(jobs) / seconds})
        print(f"{name}: {len(jobs)} jobs in {seconds:.1f} s = {rows[-1]['jobs_per_minute']:.1f} jobs/min", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    ray.shutdown()
    one, two = rows[1]["jobs_per_minute"], rows[2]["jobs_per_minute"]
    efficiency = two / (2 * one)
    dev = device_name("cpu")
    frames = int(round(2 * args.seconds * args.fps))
    result = {"model": args.model, "device": dev, "jobs": args.jobs, "frames_per_job": frames,
              "threads_per_worker": args.threads, "rows": rows, "scaling_efficiency_2_actors": efficiency,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    lines = [f"# render-batch: {args.model} on {dev}, {args.jobs} jobs of {frames} frames, {args.threads} thread(s) "
             "per worker", "", "| runner | seconds | jobs/min |", "|---|---|---|"]
    lines += [f"| {r['runner']} | {r['seconds']:.1f} | {r['jobs_per_minute']:.1f} |" for r in rows]
    lines += ["", f"Scaling efficiency, 2 actors against 1: {efficiency:.0%}."]
    write_results(Path(args.out), f"batch-{dev.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-"
                  f"{args.model}", result, lines)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
