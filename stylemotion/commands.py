"""The command handlers behind ``stylemotion <command>``: build configs, call the library, print.

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments and maps
errors to exit codes. Heavy imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: only cpu and cuda are supported")
    return name


def _batch(args: argparse.Namespace, G) -> int:
    """``--batch`` if given, else 8 on CUDA and 1 on the CPU (where batching does not help; bench/results)."""
    if args.batch is not None:
        if args.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {args.batch}")
        return args.batch
    return 8 if G.mapping.w_avg.device.type == "cuda" else 1


def _engine_options(args: argparse.Namespace) -> dict:
    """How the runtime opens its engine: ``--backend``, ``--device``, ``--onnx``, ``--precision``. The generator
    stays on the CPU; the engine takes its own copy to the device."""
    batch = getattr(args, "batch", None)
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    return {"backend": args.backend, "device": _device(args.device), "onnx_path": getattr(args, "onnx", None),
            "precision": getattr(args, "precision", None)}


def _load(ckpt: str, device: str):
    from .checkpoints import load_generator

    G = load_generator(ckpt, device=_device(device))
    for note in G.checkpoint_info.notes:
        print(f"note: {note}", file=sys.stderr)
    return G


def cmd_info(args: argparse.Namespace) -> int:
    G = _load(args.ckpt, "cpu")
    info = G.checkpoint_info
    flops = G.flops_per_image()
    report = {
        "path": info.path, "format": info.format, "random_weights": info.random_weights,
        "config": G.config.to_dict(), "num_ws": G.num_ws, "parameters": G.num_params(),
        "flops_per_image": flops, "macs_per_image": flops // 2,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{info.path}: {info.format}{'  (RANDOM WEIGHTS)' if info.random_weights else ''}")
    print(f"  resolution   {G.img_resolution}x{G.img_resolution}, {G.img_channels} channels")
    print(f"  latents      z_dim {G.z_dim}, w_dim {G.w_dim}, num_ws {G.num_ws}, c_dim {G.c_dim}")
    print(f"  parameters   {G.num_params():,} (mapping {sum(p.numel() for p in G.mapping.parameters()):,})")
    print(f"  compute      {flops / 1e9:.2f} GFLOPs per image ({flops / 2e9:.2f} GMACs), z to image")
    print("  config       " + json.dumps(G.config.to_dict()))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import load_ws, parse_seeds, per_image_paths, ws_from_seeds
    from .imaging import make_grid, save_png
    from .runtime.jobs import render_images

    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    if args.ws:
        ws = load_ws(args.ws, G)
        labels = [f"ws{i:04d}" for i in range(ws.shape[0])]
    else:
        seeds = parse_seeds(args.seeds)
        ws = ws_from_seeds(G, seeds, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff)
        labels = [f"seed{s:04d}" for s in seeds]
    frames = render_images(G, ws, batch=args.batch, noise_mode=args.noise_mode, progress=not args.quiet, **options)
    save_png(args.out, make_grid(frames, cols=args.cols))
    if not args.grid_only:
        for path, frame in zip(per_image_paths(args.out, labels), frames):
            save_png(path, frame)
    extra = "" if args.grid_only else f" and {len(frames)} images beside it"
    print(f"wrote {args.out}{extra}" + ("  (RANDOM weights: not faces)" if G.checkpoint_info.random_weights else ""))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .checkpoints.vgg16 import load_vgg16
    from .models.vgg16 import PerceptualDistance
    from .pipeline.embed import Projector, ProjectorConfig, embed_frames
    from .pipeline.video_io import iter_frames

    config = ProjectorConfig(space=args.space, steps=args.steps, initial_lr=args.lr, pixel_weight=args.pixel_weight,
                             perceptual_weight=0.0 if args.perceptual == "none" else 1.0,
                             optimize_noise=args.optimize_noise, stop_loss=args.stop_loss,
                             plateau_patience=args.plateau, amp=args.amp, seed=args.seed).validate()
    G = _load(args.ckpt, args.device)
    batch = 1 if args.optimize_noise and args.batch is None else _batch(args, G)
    if args.optimize_noise and batch != 1:
        raise ConfigError("--optimize-noise optimises the generator's shared noise maps: use --batch 1")
    perceptual = None
    if args.perceptual != "none":
        vgg, lpips_weights = load_vgg16(args.vgg)
        if vgg.random_weights:
            print("note: no --vgg weights given: VGG16 has seeded RANDOM weights, so the perceptual loss is a "
                  "random-feature loss (fine for tests, weak for real photos)", file=sys.stderr)
        perceptual = PerceptualDistance(vgg, args.perceptual, lpips_weights).to(G.mapping.w_avg.device)
    projector = Projector(G, perceptual, config)
    frames = iter_frames(args.input, every=args.every, fps=args.fps)
    preview = args.preview or str(Path(args.out).with_suffix(".png"))
    summary = embed_frames(G, frames, args.out, projector=projector, batch_size=batch,
                           warm_start=args.warm_start, warm_steps=args.warm_steps, resume=not args.no_resume,
                           preview=preview, progress=not args.quiet)
    print(f"wrote {summary.path}: {summary.embedded} frames embedded"
          + (f", {summary.resumed} kept from an earlier run" if summary.resumed else "")
          + f"; mean loss {summary.mean_loss:.4f}, mean steps {summary.mean_steps:.0f}")
    if summary.preview:
        print(f"wrote {summary.preview} (originals above reconstructions)")
    return 0


def _emotion_list(text: str | None) -> list[str] | None:
    from .pipeline.directions import emotion_id
    from .models.emotion_cnn import EMOTIONS

    if not text:
        return None
    return [EMOTIONS[emotion_id(t, where="--emotions")] for t in text.split(",")]


def cmd_label(args: argparse.Namespace) -> int:
    from .checkpoints.emotion_cnn import load_emotion_cnn
    from .models.emotion_cnn import EMOTIONS
    from .pipeline.labeling import LabelingConfig, label_videos

    fps = args.fps if args.fps is not None else (None if args.every > 1 else 5.0)
    config = LabelingConfig(fps=fps, every=args.every, smooth=args.smooth, min_face=args.min_face,
                            probabilities=args.probs)
    seqs = label_videos(args.videos, args.out, classifier=load_emotion_cnn(args.weights), config=config,
                        progress=not args.quiet)
    for seq in seqs:
        found = [e for e in seq.emotions if e is not None]
        common = max(set(found), key=found.count)
        print(f"{seq.source}: {len(seq.emotions)} frames, {len(seq.emotions) - len(found)} without a face, "
              f"mostly {EMOTIONS[common]}")
    print(f"wrote {args.out}")
    return 0


def cmd_label_samples(args: argparse.Namespace) -> int:
    from .checkpoints.emotion_cnn import load_emotion_cnn
    from .runtime.jobs import label_samples

    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    report = label_samples(G, load_emotion_cnn(args.classifier), args.out, n=args.n, seed=args.seed,
                           batch=args.batch, progress=not args.quiet, **options)
    print("argmax emotion of the classifier: " + ", ".join(f"{e} {f:.1%}" for e, f in report["fractions"].items()))
    print(f"wrote {Path(args.out) / 'latents.npz'}, labels.csv and labels.png")
    return 0


def cmd_directions(args: argparse.Namespace) -> int:
    from .pipeline.directions import (condition, labels_from_csv, labels_from_folders, labels_from_sequences,
                                      learn_directions)
    import numpy as np

    from .pipeline.latents_io import read_latents

    data = read_latents(args.latents)
    if args.labels == "folders":
        labels = labels_from_folders(data["source"])
    elif args.labels.endswith((".jsonl", ".json")):
        labels = labels_from_sequences(args.labels, data["frame_index"], data["source"])
    else:
        labels = labels_from_csv(args.labels, data["frame_index"], data["source"])
    ws = data["ws"]
    if args.space == "z":
        if "z" not in data:
            raise ConfigError(f"{args.latents}: has no 'z' latents; use --space w or w+")
        latents = data["z"]
    elif args.space == "w":
        if not np.allclose(ws, ws[:, :1]):
            raise ConfigError(f"{args.latents}: holds W+ latents (rows differ); use --space w+")
        latents = ws[:, 0]
    else:
        latents = ws
    dirs = learn_directions(latents, labels, space=args.space, emotions=_emotion_list(args.emotions),
                            test_size=args.test_size, seed=args.seed)
    for pair in args.condition or []:
        from .models.emotion_cnn import EMOTIONS
        from .pipeline.directions import emotion_id

        if ":" not in pair:
            raise ConfigError(f"--condition {pair!r}: expected EMOTION:OTHER, e.g. happy:sad")
        primary, against = (EMOTIONS[emotion_id(p, where="--condition")] for p in pair.split(":", 1))
        conditioned = condition(dirs, primary, against)  # ConfigError names an emotion the file lacks
        dirs.directions[dirs.emotions.index(primary)] = conditioned
        print(f"{primary} conditioned on {against}: its component along {against} removed")
    dirs.save(args.out)
    for e, acc, bacc, n in zip(dirs.emotions, dirs.accuracy, dirs.balanced_accuracy, dirs.counts):
        print(f"{e:9s} {n:6d} samples  held-out accuracy {acc:.3f}  balanced {bacc:.3f}")
    print(f"wrote {args.out}")
    return 0


def cmd_train_lstm(args: argparse.Namespace) -> int:
    from .models.emotion_lstm import LSTMConfig
    from .pipeline.labeling import read_sequences
    from .pipeline.sequence import TrainConfig, runs_from_sequences, save_lstm, synthetic_sequences, train_lstm

    if (args.sequences is None) == (args.synthetic is None):
        raise ConfigError("give either a sequences .jsonl or --synthetic N")
    if args.synthetic is not None:
        print(f"note: training on {args.synthetic} SYNTHETIC sequences (not observed behaviour)", file=sys.stderr)
        sequences = synthetic_sequences(args.synthetic, emotions=_emotion_list(args.emotions), seed=args.seed)
    else:
        sequences = read_sequences(args.sequences)
    runs = runs_from_sequences(sequences)
    model, report = train_lstm(runs, model_config=LSTMConfig(hidden=args.hidden, layers=args.layers),
                               config=TrainConfig(epochs=args.epochs, window=args.window, lr=args.lr, seed=args.seed),
                               progress=not args.quiet)
    save_lstm(model, args.out, report)
    print(f"held-out next-step ({report['held_out_runs']} runs, {report['lstm']['transitions']} transitions):")
    for name in ("lstm", "markov", "uniform"):
        r = report[name]
        print(f"  {name:8s} accuracy {r['accuracy']:.3f}  perplexity {r['perplexity']:.3f}")
    print(f"wrote {args.out}")
    return 0


def cmd_predict_emotions(args: argparse.Namespace) -> int:
    from .models.emotion_cnn import EMOTIONS
    from .pipeline.directions import emotion_id
    from .pipeline.sequence import load_lstm, sample_emotions

    prime = [emotion_id(p, where="--prime") for p in args.prime.split(",")]
    seq = sample_emotions(load_lstm(args.lstm), prime, args.length, temperature=args.temperature, seed=args.seed)
    print(json.dumps({"emotions": seq, "names": [EMOTIONS[i] for i in seq]}))
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from .imaging import make_grid, save_png
    from .models.emotion_cnn import EMOTIONS
    from .models.stylegan2 import z_from_seed
    from .pipeline.directions import emotion_id
    from .pipeline.keyframes import apply_direction
    from .runtime.jobs import render_images

    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    dirs = _directions_for(G, args)
    try:
        coeffs = [float(c) for c in args.coeffs.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--coeffs {args.coeffs!r}: expected comma-separated numbers") from exc
    z = z_from_seed(args.seed, G.z_dim)
    emotion = EMOTIONS[emotion_id(args.emotion, where="--emotion")]
    ws = apply_direction(G, z, dirs[emotion], dirs.space, coeffs, truncation_psi=args.trunc)
    frames = render_images(G, ws, batch=len(coeffs), progress=False, **options)
    save_png(args.out, make_grid(frames, cols=len(coeffs)))
    print(f"wrote {args.out}: seed {args.seed}, {emotion} x {coeffs} in {dirs.space}")
    return 0


def _directions_for(G, args: argparse.Namespace):
    """``--directions`` (a .npz, a folder of .npy, EMOTION=FILE.npy pairs, or 'random') in ``--space``; left out,
    a bundled model's own."""
    from .checkpoints.bundled import BUNDLED_MODELS, own_asset
    from .pipeline.directions import load_directions

    if args.directions is None:
        own = own_asset(G, "directions")
        if own is None:
            raise ConfigError(f"--directions is required for {args.ckpt} (only bundled models ship their own: "
                              f"{', '.join(BUNDLED_MODELS)}); 'random' gives seeded random directions for a demo")
        return load_directions(own, space=args.space, w_dim=G.w_dim)
    if args.directions == "random":
        print("note: --directions random: seeded random unit W directions (for demos; not learned emotions)",
              file=sys.stderr)
    return load_directions(args.directions, space=args.space, w_dim=G.w_dim)


def _lstm_for(G, path: str | None) -> str:
    """``--lstm``, else a bundled model's own LSTM; without either, a ConfigError."""
    from .checkpoints.bundled import own_asset

    own = path or own_asset(G, "lstm")
    if own is None:
        raise ConfigError("--predict needs --lstm (the emotion LSTM from `stylemotion train-lstm`)")
    return str(own)


def cmd_video(args: argparse.Namespace) -> int:
    from .pipeline.video_io import VideoWriter, check_writable
    from .runtime import stream
    from .runtime.jobs import render_video

    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    directions = _directions_for(G, args)
    lstm = _lstm_for(G, args.lstm) if args.predict is not None else None
    # The script or the LSTM's predictions are planned by the runtime (one sampler for `video --predict` and live
    # streams); the script, the directions and the output are all checked before the first frame is rendered.
    source = {"script": args.script} if args.script else {"lstm": lstm, "predict": args.predict}
    streamer = stream(G, directions=directions, seed=args.seed, identity=_identity_for(G, args.identity),
                      fps=args.fps, interp=args.interp, transition=args.transition, intensity=args.coeff,
                      truncation_psi=args.trunc, temperature=args.temperature, seconds=args.seconds,
                      batch=args.batch, **source, **options)
    items = streamer.planner.plan.items
    VideoWriter(args.out, args.fps).abort()
    sheet = args.sheet or str(Path(args.out).with_suffix("")) + "-sheet.png"
    check_writable(sheet)
    print(f"{len(items)} keyframes ({', '.join(i.emotion for i in items)}), {streamer.planner.finite_frames} frames "
          f"at {args.fps:g} fps, {args.interp} interpolation; {streamer.engine.info.backend} "
          f"{streamer.engine.info.precision} on {streamer.engine.info.device}, batch {streamer.batch}")
    result = render_video(streamer, out=args.out, sheet=sheet, progress=not args.quiet, scale=args.scale)
    print(f"wrote {result.path} ({result.frames} frames) and {result.sheet}")
    print(f"ACD (pixels, RMS in [0,1]) {result.acd:.5f}; latent acceleration {result.latent_acceleration:.5f}; "
          f"rendered at {result.render_fps:.2f} frames/s")
    return 0


def _identity_for(G, spec: str | None):
    """``--identity FILE.npz[:INDEX]`` -> ws ``[1, num_ws, w_dim]`` (None without the flag)."""
    if spec is None:
        return None
    import torch

    from .pipeline.latents_io import read_identity

    return torch.as_tensor(read_identity(spec, num_ws=G.num_ws, w_dim=G.w_dim))[None]


def cmd_align(args: argparse.Namespace) -> int:
    import json as _json

    from .atomic import atomic_path
    from .errors import InputError
    from .imaging import save_png
    from .pipeline.align import MIN_SCORE, align, detect_faces
    from .pipeline.video_io import read_image

    if not 16 <= args.size <= 4096:
        raise ConfigError(f"--size must be in 16..4096, got {args.size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, failed = [], []
    for photo in args.photos:
        try:
            image = read_image(photo)
            faces = [f for f in detect_faces(image) if f.score >= MIN_SCORE]
            if not faces:
                raise InputError(f"{photo}: no face found (MTCNN, probability >= {MIN_SCORE})")
            for i in range(len(faces) if args.all else 1):
                a = align(image, args.size, where=photo, face_index=i, faces=faces)
                path = save_png(out / f"{Path(photo).stem}-{i}.png", a.crop)
                records.append({"photo": str(photo), "face": i, "crop": str(path), "score": a.face.score,
                                "box": list(a.face.box), "landmarks": a.face.landmarks.round(2).tolist(),
                                "landmarks_in_crop": a.landmarks.round(2).tolist()})
                print(f"{photo}: face {i} ({len(faces)} found) -> {path}")
        except InputError as exc:
            failed.append(str(exc))
            print(f"not aligned: {exc}", file=sys.stderr)
    with atomic_path(out / "faces.json") as tmp:
        tmp.write_text(_json.dumps({"size": args.size, "faces": records, "not_aligned": failed}, indent=2))
    print(f"wrote {len(records)} crop(s) and {out / 'faces.json'}" + (f"; {len(failed)} photo(s) without a face"
                                                                       if failed else ""))
    return 1 if failed else 0


def cmd_animate(args: argparse.Namespace) -> int:
    from .runtime.jobs import animate_photo

    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    directions = _directions_for(G, args)
    perceptual = None
    if args.perceptual != "none":
        from .checkpoints.vgg16 import load_vgg16
        from .models.vgg16 import PerceptualDistance

        vgg, lpips_weights = load_vgg16(args.vgg)
        if vgg.random_weights:
            print("note: no --vgg weights given: the perceptual loss uses VGG16 with seeded RANDOM weights",
                  file=sys.stderr)
        perceptual = PerceptualDistance(vgg, args.perceptual, lpips_weights)
    result = animate_photo(G, args.photo, args.out, directions=directions, script=args.script, space=args.space,
                           steps=args.steps, perceptual=perceptual, face=args.face, fps=args.fps,
                           interp=args.interp, transition=args.transition, intensity=args.coeff, scale=args.scale,
                           seed=args.seed, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr),
                           **options)
    print(f"wrote {result['video']} ({result['frames']} frames), {result['aligned']}, {result['latents']}, "
          f"{result['reconstruction']}, {result['sheet']}"
          + "".join(f", {p}" for p in result["strips"].values()))
    return 0


def cmd_acd(args: argparse.Namespace) -> int:
    import numpy as np

    from .pipeline.metrics import acd, onnx_extractor, pixel_features, read_video_frames, vgg_extractor

    if args.features == "pixels":
        extractor = pixel_features
    elif args.features == "vgg":
        from .checkpoints.vgg16 import load_vgg16

        vgg, _ = load_vgg16(args.vgg)
        if vgg.random_weights:
            print("note: VGG16 has seeded RANDOM weights (pass --vgg for ImageNet features)", file=sys.stderr)
        extractor = vgg_extractor(vgg)
    else:
        extractor = onnx_extractor(args.features)
    values = []
    for video in args.videos:
        values.append(acd(read_video_frames(video), extractor))
        print(f"{video}: ACD {values[-1]:.5f}")
    print(f"mean {np.mean(values):.5f} +/- {np.std(values):.5f} over {len(values)} videos ({args.features})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .atomic import atomic_path
    from .pipeline.sequence import load_lstm
    from .pipeline.video import bar_chart
    from .pipeline.video_io import check_writable
    from .runtime.jobs import evaluate

    check_writable(Path(args.out) / "eval.md")
    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    directions = _directions_for(G, args)
    modes = args.modes.split(",")
    table = evaluate(G, directions, videos=args.videos, emotions_per_video=args.emotions, seconds=args.seconds,
                     fps=args.fps, modes=modes, lstm=load_lstm(args.lstm) if args.lstm else None,
                     batch=args.batch, progress=not args.quiet, ray_address=args.ray, actors=args.actors, **options)
    lines = [f"# ACD over {args.videos} videos ({args.ckpt}, {args.fps:g} fps, {args.emotions} emotions x "
             f"{args.seconds:g} s)", "", "| videos | ACD (pixels) | latent acceleration (RMS) |", "|---|---|---|"]
    lines += [f"| {name} | {r['acd_mean']:.5f} +/- {r['acd_std']:.5f} | {r['accel_mean']:.4f} +/- "
              f"{r['accel_std']:.4f} |" for name, r in table.items()]
    out = Path(args.out)
    with atomic_path(out / "eval.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out / "eval.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    bar_chart(out / "eval.png", list(table), [r["acd_mean"] for r in table.values()],
              [r["acd_std"] for r in table.values()], "ACD (pixels), mean +/- std")
    print("\n".join(lines))
    print(f"wrote {out / 'eval.md'}, eval.json and eval.png")
    return 0


def _batch_profile(text: str):
    from .export.spec import BatchProfile

    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError as exc:
        raise ConfigError(f"--batch {text!r}: expected MIN:OPT:MAX, e.g. 1:8:32") from exc
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"--batch {text!r}: need 1 <= min <= opt <= max")
    return BatchProfile(lo, opt, hi)


def cmd_render_batch(args: argparse.Namespace) -> int:
    from .runtime.batch import Settings, render_batch

    from .checkpoints.bundled import is_bundled

    if args.directions == "random" or (args.directions is None and not is_bundled(args.ckpt)):
        print("note: --directions random: seeded RANDOM directions (demo only)", file=sys.stderr)
    if args.actors < 1 or args.retries < 0 or args.max_restarts < 0:
        raise ConfigError("--actors must be >= 1, --retries and --max-restarts >= 0")
    options = _engine_options(args)
    settings = Settings(ckpt=args.ckpt, directions=args.directions, space=args.space, backend=options["backend"],
                        device=options.get("device"), precision=options.get("precision"),
                        onnx=options.get("onnx_path"), batch=args.batch, threads=args.threads, retries=args.retries)
    result = render_batch(args.jobs, args.out, settings, ray_address=args.ray, actors=args.actors,
                          gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                          max_restarts=args.max_restarts, progress=not args.quiet)
    print(f"{result.rendered} rendered, {result.skipped} already complete, {len(result.failed)} failed "
          f"in {result.seconds:.1f} s; manifest {result.manifest}")
    for job_id in result.failed:
        print(f"failed: {job_id} (its error is in the manifest)", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import run, settings_from_args

    result = run(settings_from_args(args), log=lambda m: print(m, flush=True))
    return 0 if result["rows"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoints.vgg16 import load_vgg16
    from .export.networks import (emotion_cnn_spec, lstm_specs, mapping_spec, synthesis_cpu_spec,
                                  synthesis_fp16_spec, synthesis_noise_spec, synthesis_spec, vgg16_spec)
    from .export.onnx_export import export_onnx

    profile = _batch_profile(args.batch)
    G = _load(args.ckpt, "cpu")
    specs = [synthesis_spec(G, profile), mapping_spec(G, profile)]
    if args.fp16:
        specs.append(synthesis_fp16_spec(G, profile))
    if args.cpu_plan:
        specs.append(synthesis_cpu_spec(G, profile))
    if args.noise_inputs:
        specs.append(synthesis_noise_spec(G, profile))
    vgg, _ = load_vgg16(args.vgg)
    if vgg.random_weights:
        print("note: vgg16.onnx has seeded RANDOM weights (pass --vgg for ImageNet features)", file=sys.stderr)
    specs.append(vgg16_spec(vgg, profile))
    if args.lstm:
        from .pipeline.sequence import load_lstm

        specs += lstm_specs(load_lstm(args.lstm), profile)
    if args.emotion_cnn is not None:
        from .checkpoints.emotion_cnn import load_emotion_cnn

        specs.append(emotion_cnn_spec(load_emotion_cnn(args.emotion_cnn or None), profile))
    source = args.ckpt if Path(args.ckpt).is_file() else None
    for spec in specs:
        path = export_onnx(spec, args.out, source=source, config=G.config.to_dict() if spec.name in
                           ("synthesis", "synthesis_cpu", "mapping") else None)
        checks = json.loads(path.with_suffix(".json").read_text())["checks"]
        if "ort_psnr_db_vs_fp32" in checks:
            per = checks["ort_psnr_db_vs_fp32"]
            result = f"min PSNR {min(per.values()):.1f} dB against float32"
        else:
            per = checks["ort_relative_error"]
            result = f"max relative error {max(per.values()):.1e}"
        print(f"{path}: checked (onnx full check, shape inference, ONNX Runtime vs PyTorch at batch "
              f"{', '.join(per)}: {result})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .engines.cache import EngineCache
    from .engines.factory import tensorrt_engine

    if args.backend != "tensorrt":
        raise ConfigError("only TensorRT plans are prebuilt; torch and onnxruntime engines need no build step")
    onnx_file = Path(args.onnx) / "synthesis.onnx" if Path(args.onnx).is_dir() else Path(args.onnx)
    if not onnx_file.is_file():
        raise ConfigError(f"{onnx_file}: no such ONNX file (make one with `stylemotion export`)")
    G = _load(args.ckpt, "cpu")
    engine = tensorrt_engine(G, onnx_file, precision=args.precision, profile=_batch_profile(args.batch),
                             cache=EngineCache(args.cache))
    print(f"{engine.info.backend} {engine.info.precision} on {engine.info.device}: {engine.info.detail}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    import torch

    from .atomic import atomic_path
    from .checkpoints import save_generator
    from .checkpoints.dcgan import load_dcgan
    from .checkpoints.emotion_cnn import load_emotion_cnn
    from .pipeline.distill import DistillConfig, Distiller
    from .runtime.jobs import compare_to_teacher

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DistillConfig(kimg=args.kimg, batch=args.batch, lr=args.lr, objective=args.objective,
                        fer_weight=args.fer_weight, adv_weight=args.adv_weight, seed=args.seed)
    teacher, classifier = load_dcgan(args.teacher), load_emotion_cnn()
    run = Distiller(args.out, cfg, teacher=teacher, classifier=classifier, init=args.init)
    print(f"distill: {run.step}/{cfg.total_steps} steps done in {args.out}", file=sys.stderr)
    seconds = args.minutes * 60 if args.minutes else None
    step = run.run(progress=not args.quiet, max_seconds=seconds)
    if step < cfg.total_steps:
        print(f"stopped at step {step}/{cfg.total_steps}; run the same command again to continue")
        return 0
    G = run.finished_student()
    out = Path(args.out)
    save_generator(G, out / "generator.safetensors")
    report = compare_to_teacher(G, teacher, classifier)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'generator.safetensors'}: held-out PSNR {report['psnr_mean']:.2f} dB (median "
          f"{report['psnr_median']:.2f}), FER argmax agreement {report['fer_agreement']:.1%} on {report['n']} z")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from .engines.cache import EngineCache

    cache = EngineCache(args.cache)
    entries = cache.entries()
    print(f"{cache.root}: {len(entries)} cached engine(s)")
    for e in entries:
        if "error" in e:
            print(f"  {Path(e['plan']).name}: {e['error']}")
            continue
        key = e["key"]
        print(f"  {Path(e['plan']).name}: {key.get('backend')} {key.get('backend_version')} "
              f"{key.get('precision')} batch {key.get('profile')} on {key.get('gpu')} "
              f"(sm {key.get('compute_capability')}), {e.get('bytes', '?')} bytes")
    return 0


def _stats_line(stats: dict) -> str:
    lat, ctl = stats["latency_ms"], stats["control_latency_ms"]
    text = (f"{stats['frames']} frames, {stats['fps']:.1f} fps (target {stats['target_fps']:g}), latency p50/p95/p99 "
            f"{lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms, dropped {stats['dropped']}, queue "
            f"{stats['queues']['rendered']}")
    if ctl["count"]:
        text += f", control latency p50 {ctl['p50']:.0f} ms (max {ctl['max']:.0f})"
    return text


def cmd_stream(args: argparse.Namespace) -> int:
    import threading
    import time

    from .runtime import FileSink, NullSink, RawSink, stream

    outputs = [o for o in (args.out, args.png) if o] + (["stdout"] if args.stdout else [])
    if len(outputs) > 1:
        raise ConfigError("choose one output: --out FILE, --png DIR or --stdout")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be positive seconds, got {args.duration}")
    options = _engine_options(args)
    if args.mode is None:  # a file records every frame; a live output is paced
        args.mode = "offline" if (args.out or args.png) else "realtime"
    G = _load(args.ckpt, "cpu")
    directions = _directions_for(G, args) if args.directions else None  # the runtime takes a bundled model's own
    source: dict = {}
    if args.script:
        source["script"] = args.script
    elif args.lstm or args.predict is not None:
        source.update(lstm=_lstm_for(G, args.lstm), predict=args.predict)
    streamer = stream(G, directions=directions, seed=args.seed, identity=_identity_for(G, args.identity),
                      fps=args.fps, mode=args.mode, interp=args.interp,
                      transition=args.transition, intensity=args.coeff, truncation_psi=args.trunc,
                      temperature=args.temperature, seconds=args.seconds, batch=args.batch,
                      lookahead=args.lookahead, **source, **options)
    info = streamer.engine.info
    print(f"streaming {args.mode} at {args.fps:g} fps: {info.backend} {info.precision} on {info.device}, batch "
          f"{streamer.batch}, {info.resolution}x{info.resolution} -> {outputs[0] if outputs else 'no output'}",
          file=sys.stderr)
    if args.out or args.png:
        sink = FileSink(args.out or args.png, args.fps)
    elif args.stdout:
        sink = RawSink()
    else:
        sink = NullSink()
    last_report = time.perf_counter()

    def report(frame) -> None:
        nonlocal last_report
        now = time.perf_counter()
        if now - last_report >= args.stats_every:
            last_report = now
            print(_stats_line(streamer.stats()), file=sys.stderr)

    # --duration ends the stream as a finite source ends (files are finished), even if no frame arrives.
    timer = threading.Timer(args.duration, streamer.finish) if args.duration is not None else None
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        with streamer:
            streamer.run(sink, on_frame=report if args.mode == "realtime" else None)
    finally:
        if timer is not None:
            timer.cancel()
    stats = streamer.stats()
    print(_stats_line(stats), file=sys.stderr)
    if args.stats_json:
        print(json.dumps(stats, indent=2), file=sys.stderr)
    if args.out or args.png:
        print(f"wrote {sink.path} ({stats['frames']} frames)", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtime.server import ServerConfig, build_server, run

    host, _, port = args.http.rpartition(":")
    try:
        config = ServerConfig(host=host or "127.0.0.1", port=int(port), fps=args.fps, max_streams=args.max_streams,
                              max_viewers=args.max_viewers, virtual_camera=args.virtual_camera, rate=args.rate,
                              burst=max(1, int(2 * args.rate)), idle_timeout=args.idle_timeout,
                              allowed_hosts=tuple(args.allow_host)).validate()
    except ValueError as exc:
        raise ConfigError(f"--http {args.http!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 ({exc})") from exc
    options = _engine_options(args)
    G = _load(args.ckpt, "cpu")
    directions = _directions_for(G, args) if args.directions else None
    server = build_server(G, directions=directions, script=args.script, lstm=args.lstm, config=config, seed=args.seed,
                          identity=_identity_for(G, args.identity),
                          max_batch=args.batch, interp=args.interp, transition=args.transition,
                          coefficient=args.coeff, truncation_psi=args.trunc, temperature=args.temperature,
                          seconds=args.seconds, **options)
    info = server.hub.engine.info
    print(f"serving http://{config.host}:{config.port}/ ({info.backend} {info.precision} on {info.device}, "
          f"{config.fps:g} fps, up to {config.max_streams} streams and {config.max_viewers} viewers)",
          file=sys.stderr, flush=True)
    run(server)
    return 0
