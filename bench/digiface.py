"""Build and measure the bundled ``digiface-64`` model from a finished ``stylemotion distill`` run.

    stylemotion distill --out runs/digiface --kimg 160          # the student (about 70 min on 2 CPU cores)
    python bench/digiface.py --run runs/digiface                 # this script: everything below

Steps (each through the package's own commands and functions, so the recipe is the product's method):
1. the EMA student, stored as float16 safetensors in ``stylemotion/data/digiface-64/generator.safetensors``
   (float16 storage keeps it under 10 MB; it is computed in float32: the PSNR against float32 storage is reported);
2. student against teacher on 200 held-out z (PSNR, FER argmax agreement);
3. ``stylemotion label-samples`` on N faces, then ``stylemotion directions`` (logistic regression in W);
4. each direction checked on 100 held-out identities (seeds from 1,000,000): P(emotion) at -c and +c; emotions
   whose held-out balanced accuracy is below ``--min-bacc`` or whose check fails are reported and not shipped;
5. ``stylemotion train-lstm --synthetic`` over the shipped emotions;
6. pictures for the README (random faces: teacher over student; one coefficient strip per shipped emotion) and
   ``bench/results/digiface-64-<date>.json``; the model card ``stylemotion/data/digiface-64/MODEL.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylemotion.cli import main as cli  # noqa: E402


def run_cli(*argv: str) -> None:
    print("$ stylemotion " + " ".join(argv), flush=True)
    code = cli(list(argv))
    if code != 0:
        raise SystemExit(f"stylemotion {argv[0]} failed with exit code {code}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the distill run folder (with train-state.pt)")
    p.add_argument("--work", default=None, help="scratch folder (default RUN/bundle)")
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--coefficient", type=float, default=3.0, help="the check's c: -c vs +c (the videos' default)")
    p.add_argument("--min-bacc", type=float, default=0.6, help="lowest held-out balanced accuracy shipped")
    p.add_argument("--min-rise", type=float, default=0.8, help="lowest fraction of identities whose P rises")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from stylemotion.checkpoints import load_generator
    from stylemotion.checkpoints.bundled import DATA_DIR
    from stylemotion.checkpoints.dcgan import load_dcgan
    from stylemotion.checkpoints.emotion_cnn import load_emotion_cnn
    from stylemotion.checkpoints.native import write_native
    from stylemotion.checkpoints.official import state_dict_from_generator
    from stylemotion.imaging import make_grid, save_png, upscale
    from stylemotion.models.stylegan2 import z_from_seed
    from stylemotion.pipeline.directions import Directions
    from stylemotion.pipeline.distill import DistillConfig, Distiller, held_out_z
    from stylemotion.pipeline.keyframes import apply_direction
    from stylemotion.runtime.jobs import compare_to_teacher, direction_effect, render_images

    run_dir = Path(args.run)
    work = Path(args.work or run_dir / "bundle")
    ship = DATA_DIR / "digiface-64"
    ship.mkdir(parents=True, exist_ok=True)
    teacher, classifier = load_dcgan(), load_emotion_cnn()
    state = torch.load(run_dir / "train-state.pt", map_location="cpu", weights_only=True)
    cfg = DistillConfig(**{k: v for k, v in state["config"].items() if k in DistillConfig.__dataclass_fields__})
    from stylemotion.models.stylegan2 import GeneratorConfig

    distiller = Distiller(run_dir, cfg, teacher=teacher, classifier=classifier,
                          student_config=GeneratorConfig.from_dict(state["student_config"]))
    G32 = distiller.finished_student()
    results: dict = {"run": {"steps": distiller.step, "kimg": distiller.step * cfg.batch / 1000,
                             "config": state["config"], "student_config": state["student_config"]}}

    # 1. float16 storage, float32 compute
    sd = {k: v.half() for k, v in state_dict_from_generator(G32).items()}
    write_native(ship / "generator.safetensors", sd, G32.config)
    G = load_generator("digiface-64")
    z = held_out_z(64)
    with torch.no_grad():
        a = render_images(G32, G32.mapping(z), batch=64, progress=False).astype(np.float64)
        b = render_images(G, G.mapping(z), batch=64, progress=False).astype(np.float64)
    results["fp16_storage"] = {"bytes": (ship / "generator.safetensors").stat().st_size,
                               "psnr_vs_fp32_db": float(10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12)))}
    print("storage:", results["fp16_storage"])

    # 2. student vs teacher
    results["teacher_match"] = compare_to_teacher(G, teacher, classifier, n=200)
    print("teacher match:", {k: v for k, v in results["teacher_match"].items() if "emotions" not in k})

    # 3. labels and directions, by the seed's method
    run_cli("label-samples", "digiface-64", "--n", str(args.samples), "--out", str(work), "--quiet")
    counts = np.bincount(np.load(work / "latents.npz")["probabilities"].argmax(1), minlength=7)
    from stylemotion.models.emotion_cnn import EMOTIONS

    learnable = [e for e, n in zip(EMOTIONS, counts) if n >= 30]
    run_cli("directions", "--latents", str(work / "latents.npz"), "--labels", str(work / "labels.csv"),
            "--space", "w", "--emotions", ",".join(learnable), "--out", str(work / "directions-all.npz"))
    learned = Directions.load(work / "directions-all.npz")

    # 4. the check on held-out identities
    seeds = range(1_000_000, 1_000_000 + args.identities)
    per_emotion = {}
    for i, e in enumerate(learned.emotions):
        effect = direction_effect(G, learned, classifier, e, seeds=seeds, coefficient=args.coefficient)
        bacc = float(learned.balanced_accuracy[i])
        usable = bacc >= args.min_bacc and effect["rises"] >= args.min_rise
        per_emotion[e] = {"samples": int(learned.counts[i]), "held_out_accuracy": float(learned.accuracy[i]),
                          "balanced_accuracy": bacc, **effect, "shipped": usable}
        print(f"{e:9s} n={int(learned.counts[i]):5d} bacc={bacc:.3f} rises={effect['rises']:.2f} "
              f"P {effect['p_low']:.3f}->{effect['p_high']:.3f} {'shipped' if usable else 'NOT shipped'}")
    for e, n in zip(EMOTIONS, counts):
        if e not in per_emotion:
            per_emotion[e] = {"samples": int(n), "shipped": False,
                              "reason": f"only {int(n)} of {args.samples} faces labelled {e}: not learnable"}
    results["labels"] = {e: int(n) for e, n in zip(EMOTIONS, counts)}
    results["emotions"] = per_emotion
    keep = [i for i, e in enumerate(learned.emotions) if per_emotion[e]["shipped"]]
    if len(keep) < 2:
        raise SystemExit(f"only {len(keep)} usable emotions; not shipping directions")
    shipped = Directions([learned.emotions[i] for i in keep], learned.directions[keep], "w",
                         learned.accuracy[keep], learned.balanced_accuracy[keep], learned.counts[keep])
    shipped.save(ship / "directions.npz")

    # 5. the LSTM over the shipped emotions (synthetic sequences)
    run_cli("train-lstm", "--synthetic", "400", "--emotions", ",".join(shipped.emotions), "--out",
            str(ship / "lstm.safetensors"), "--quiet")

    # 6. pictures and the record
    pics = ROOT / "docs" / "digiface"
    pics.mkdir(parents=True, exist_ok=True)
    z16 = held_out_z(16)
    with torch.no_grad():
        t = ((teacher(z16).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    s = render_images(G, G.mapping(z16), batch=16, progress=False)
    save_png(pics / "teacher-vs-student.png", make_grid(upscale(np.concatenate([t[:8], s[:8], t[8:], s[8:]]), 2),
                                                        cols=8))
    faces = render_images(G, G.mapping(torch.cat([z_from_seed(i, G.z_dim) for i in range(32)]),
                                       truncation_psi=0.7), batch=32, progress=False)
    save_png(pics / "random-faces.png", make_grid(upscale(faces, 2), cols=8))
    coeffs = [-args.coefficient, -args.coefficient / 2, 0, args.coefficient / 2, args.coefficient]
    for e in shipped.emotions:
        rows = []
        for seed in (1_000_000, 1_000_001, 1_000_002, 1_000_003):
            ws = apply_direction(G, z_from_seed(seed, G.z_dim), shipped[e], "w", coeffs, truncation_psi=0.7)
            rows.append(render_images(G, ws, batch=len(coeffs), progress=False))
        save_png(pics / f"strip-{e}.png", make_grid(upscale(np.concatenate(rows), 2), cols=len(coeffs)))
    results["shipped_emotions"] = shipped.emotions
    results["files"] = {p.name: p.stat().st_size for p in sorted(ship.iterdir()) if p.is_file()}
    out = ROOT / "bench" / "results" / f"digiface-64-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    (ship / "MODEL.md").write_text(model_card(results, out.name))
    print(f"wrote {out}, {ship}, {pics}")
    return 0


def model_card(r: dict, record: str) -> str:
    m, run = r["teacher_match"], r["run"]
    rows = []
    for e, v in r["emotions"].items():
        if "balanced_accuracy" in v:
            rows.append(f"| {e} | {v['samples']} | {v['held_out_accuracy']:.3f} | {v['balanced_accuracy']:.3f} | "
                        f"{v['rises']:.0%} | {v['p_low']:.3f} -> {v['p_high']:.3f} | "
                        f"{'yes' if v['shipped'] else 'no'} |")
        else:
            rows.append(f"| {e} | {v['samples']} | - | - | - | - | no ({v['reason']}) |")
    return f"""# digiface-64

A 64x64 StyleGAN2 (this project's architecture) distilled from the DCGAN face generator of `gan_face_generate`
1.1.1 (MIT licence), which was trained on DigiFace-1M's synthetic faces. **DigiFace-1M is licensed for
non-commercial research only; so is this model.** For demos, tests and real-time CPU streaming.

- Architecture: {json.dumps(run["student_config"])}
- Training: `stylemotion distill`, objective `{run["config"]["objective"]}`, {run["kimg"]:.0f}k teacher samples
  ({run["steps"]} steps of {run["config"]["batch"]}), on 2 CPU cores.
- Stored as float16 safetensors ({r["fp16_storage"]["bytes"] / 2 ** 20:.1f} MiB), computed in float32: frames
  differ from float32 storage by {r["fp16_storage"]["psnr_vs_fp32_db"]:.1f} dB PSNR.

## Student against teacher (200 held-out z)

PSNR {m["psnr_mean"]:.2f} dB mean ({m["psnr_median"]:.2f} median, {m["psnr_p10"]:.2f} at the 10th percentile);
the FER classifier gives the same argmax emotion to student and teacher for {m["fer_agreement"]:.1%} of them.
Teacher argmax counts {m["teacher_emotions"]}; student {m["student_emotions"]}.

## Emotion directions (W space; labels from the FER classifier on {sum(r["labels"].values())} random faces)

Check: P(emotion) at coefficient -3 vs +3 on 100 held-out identities (truncation 0.7).

| emotion | labelled faces | held-out accuracy | balanced | P rises | mean P (-3 -> +3) | shipped |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Shipped: {", ".join(r["shipped_emotions"])}. The LSTM (`lstm.safetensors`) is trained on SYNTHETIC sequences over
these emotions (`stylemotion train-lstm --synthetic 400`), not on observed behaviour.

Made by `stylemotion distill` and `python bench/digiface.py`; all figures: `bench/results/{record}`.
"""


if __name__ == "__main__":
    sys.exit(main())
