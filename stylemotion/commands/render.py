"""Commands that render through the runtime in offline mode: ``generate``, ``edit``, ``video``, ``render-batch``,
and the video metrics ``acd`` and ``eval``.

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments. Heavy
imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .inputs import check_script, directions_for, engine_options, identity_for, load_model, lstm_for


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generate import load_ws, parse_seeds, per_image_paths, ws_from_seeds
    from ..imaging import make_grid, save_png
    from ..runtime.jobs import render_images

    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
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


def cmd_edit(args: argparse.Namespace) -> int:
    from ..imaging import make_grid, save_png
    from ..models.stylegan2 import z_from_seed
    from ..pipeline.keyframes import apply_direction
    from ..runtime.jobs import render_images

    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    dirs = directions_for(G, args)
    try:
        coeffs = [float(c) for c in args.coeffs.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--coeffs {args.coeffs!r}: expected comma-separated numbers") from exc
    z = z_from_seed(args.seed, G.z_dim)
    emotion = dirs.emotion(args.emotion, where="--emotion")
    ws = apply_direction(G, z, dirs[emotion], dirs.space, coeffs, truncation_psi=args.trunc)
    frames = render_images(G, ws, batch=len(coeffs), progress=False, **options)
    save_png(args.out, make_grid(frames, cols=len(coeffs)))
    print(f"wrote {args.out}: seed {args.seed}, {emotion} x {coeffs} in {dirs.space}")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from ..pipeline.video_io import VideoWriter, check_writable
    from ..runtime import stream
    from ..runtime.jobs import render_video

    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    directions = directions_for(G, args)
    check_script(args.script, directions, G)
    lstm = lstm_for(G, args.lstm) if args.predict is not None else None
    # The script or the LSTM's predictions are planned by the runtime (one sampler for `video --predict` and live
    # streams); the script, the directions and the output are all checked before the first frame is rendered.
    source = {"script": args.script} if args.script else {"lstm": lstm, "predict": args.predict}
    streamer = stream(G, directions=directions, seed=args.seed, identity=identity_for(G, args.identity),
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


def cmd_render_batch(args: argparse.Namespace) -> int:
    from ..runtime.batch import JobDefaults, Settings, render_batch

    from ..checkpoints.bundled import is_bundled

    if args.directions == "random" or (args.directions is None and not is_bundled(args.ckpt)):
        print("note: --directions random: seeded RANDOM directions (demo only)", file=sys.stderr)
    if args.actors < 1 or args.retries < 0 or args.max_restarts < 0:
        raise ConfigError("--actors must be >= 1, --retries and --max-restarts >= 0")
    options = engine_options(args)
    settings = Settings(ckpt=args.ckpt, directions=args.directions, space=args.space, backend=options["backend"],
                        device=options.get("device"), precision=options.get("precision"),
                        onnx=options.get("onnx_path"), batch=args.batch, threads=args.threads, retries=args.retries)
    given = {name: getattr(args, name) for name in ("fps", "seconds", "interp", "coeff", "transition", "trunc")}
    defaults = JobDefaults(**{name: value for name, value in given.items() if value is not None})
    result = render_batch(args.jobs, args.out, settings, ray_address=args.ray, actors=args.actors,
                          gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                          max_restarts=args.max_restarts, defaults=defaults, progress=not args.quiet)
    print(f"{result.rendered} rendered, {result.skipped} already complete, {len(result.failed)} failed "
          f"in {result.seconds:.1f} s; manifest {result.manifest}")
    for job_id in result.failed:
        print(f"failed: {job_id} (its error is in the manifest)", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_acd(args: argparse.Namespace) -> int:
    import numpy as np

    from ..pipeline.metrics import acd, onnx_extractor, pixel_features, read_video_frames, vgg_extractor

    if args.features == "pixels":
        extractor = pixel_features
    elif args.features == "vgg":
        from ..checkpoints.vgg16 import load_vgg16

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
    from ..atomic import atomic_path
    from ..pipeline.sequence import load_lstm
    from ..pipeline.video import bar_chart
    from ..pipeline.video_io import check_writable
    from ..runtime.jobs import evaluate

    check_writable(Path(args.out) / "eval.md")
    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    directions = directions_for(G, args)
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
