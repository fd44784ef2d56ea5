"""Projector benchmarks: seconds per optimisation step per frame, and cold versus warm-started video frames.

    python bench/embed.py                                   # CPU: ffhq-256, batch 1 and 4, fp32
    python bench/embed.py --model ffhq-1024 --device cuda --batch 1,8 --amp both
    python bench/embed.py --model tiny-32 --device cpu --batch 1 --steps 1 --frames 2 --max-steps 5   # dry run

Part 1 (``--model``): the cost of one projector step (generator forward + backward, LPIPS VGG16 forward +
backward) per frame, for each batch size and precision. The weights do not change the cost, so the built-in
random-weight models measure it honestly.
Part 2 (small generator, seeded): a slowly drifting latent rendered to a sequence; each frame projected from
``w_avg`` (cold) or from the previous frame's solution (warm), each stopping at the same loss (or after
``--max-steps``). Reports the steps, seconds and PSNR per frame.

Writes ``bench/results/embed-<device>-<date>-<model>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import device_name, load_model, pick_device, write_results  # noqa: E402
from stylemotion.checkpoints import random_generator  # noqa: E402
from stylemotion.models.stylegan2 import GeneratorConfig  # noqa: E402
from stylemotion.models.vgg16 import PerceptualDistance, random_vgg16  # noqa: E402
from stylemotion.pipeline.embed import Projector, ProjectorConfig  # noqa: E402


def step_cost(model: str, device: str, batches: list[int], amps: list[bool], steps: int) -> list[dict]:
    G = load_model(model, device=device)
    perceptual = PerceptualDistance(random_vgg16(0), "lpips").to(device)
    rows = []
    for amp in amps:
        projector = Projector(G, perceptual, ProjectorConfig(steps=steps + 1, amp=amp, w_avg_samples=1000))
        for batch in batches:
            with torch.no_grad():
                targets = G.synthesis(G.mapping(torch.randn(batch, G.z_dim, device=device)), precision="fp32")
            projector.project(targets, steps=1)  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            projector.project(targets, steps=steps)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - t0) / steps
            rows.append({"model": model, "batch": batch, "amp": amp, "s_per_step": per_step,
                         "s_per_step_per_frame": per_step / batch})
            print(f"{model} batch {batch} amp={amp}: {per_step:.3f} s/step, {per_step / batch:.3f} s/step/frame",
                  flush=True)
    return rows


def cold_vs_warm(device: str, frames: int, stop_loss: float, max_steps: int = 300) -> dict:
    cfg = GeneratorConfig(z_dim=32, w_dim=32, img_resolution=32, channel_base=1024, channel_max=32, mapping_layers=2)
    G = random_generator(cfg, seed=5).to(device)
    with torch.no_grad():
        for block in G.synthesis.blocks():  # keep images in about [-1, 1] like a trained generator
            block.torgb.weight.mul_(0.2)
        a, b = G.mapping(torch.randn(2, 32, generator=torch.Generator().manual_seed(9)).to(device))
        ws = torch.stack([a + (b - a) * (i / (4 * frames)) for i in range(frames)])
        targets = G.synthesis(ws, precision="fp32")
    projector = Projector(G, PerceptualDistance(random_vgg16(0), "lpips").to(device),
                          ProjectorConfig(steps=max_steps, stop_loss=stop_loss, w_avg_samples=2000))
    out = {}
    for mode in ("cold", "warm"):
        steps, secs, psnrs, previous = [], [], [], None
        for i in range(frames):
            t0 = time.perf_counter()
            r = projector.project(targets[i:i + 1], init=previous, noise_factor=0.0 if previous is not None else None)
            secs.append(time.perf_counter() - t0)
            steps.append(int(r.steps[0]))
            with torch.no_grad():
                mse = (G.synthesis(r.ws, precision="fp32") - targets[i:i + 1]).square().mean().item()
            psnrs.append(10 * np.log10(4 / max(mse, 1e-20)))
            if mode == "warm":
                previous = r.ws
        out[mode] = {"steps": steps, "mean_steps": float(np.mean(steps)), "mean_s_per_frame": float(np.mean(secs)),
                     "mean_psnr_db": float(np.mean(psnrs))}
        print(f"{mode}: mean steps {np.mean(steps):.1f}, {np.mean(secs):.2f} s/frame, PSNR {np.mean(psnrs):.1f} dB")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ffhq-256")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", default="1,4")
    p.add_argument("--amp", choices=["off", "on", "both"], default="off")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    p.add_argument("--frames", type=int, default=8, help="frames in the cold/warm sequence (0: skip that part)")
    p.add_argument("--stop-loss", type=float, default=2e-3)
    p.add_argument("--max-steps", type=int, default=300, help="step limit per frame in the cold/warm sequence")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amps = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    rows = step_cost(args.model, device, [int(b) for b in args.batch.split(",")], amps, args.steps)
    seq = cold_vs_warm(device, args.frames, args.stop_loss, args.max_steps) if args.frames > 0 else {}
    name = device_name(device)
    result = {"device": name, "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(),
              "step_cost": rows, "cold_vs_warm": seq, "stop_loss": args.stop_loss, "max_steps": args.max_steps}
    stem = f"embed-{name.replace(' ', '_').replace('/', '_')}-{dt.date.today().isoformat()}-{args.model}"
    lines = [f"# Projector on {name} (torch {torch.__version__})", "", "| model | batch | amp | s/step | s/step/frame |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['amp']} | {r['s_per_step']:.3f} | {r['s_per_step_per_frame']:.3f} |"
              for r in rows]
    if seq:
        lines += ["", f"Slow sequence of {args.frames} frames (32x32 seeded generator), stop at loss "
                  f"{args.stop_loss} or after {args.max_steps} steps:", "",
                  "| start | mean steps | s/frame | PSNR dB |", "|---|---|---|---|"]
        lines += [f"| {m} | {v['mean_steps']:.1f} | {v['mean_s_per_frame']:.2f} | {v['mean_psnr_db']:.1f} |"
                  for m, v in seq.items()]
    write_results(Path(args.out), stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
