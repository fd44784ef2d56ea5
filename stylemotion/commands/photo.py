"""From a photo: ``align`` (MTCNN + the FFHQ crop) and ``animate`` (align, embed, render a script).

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments. Heavy
imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .inputs import directions_for, engine_options, load_model


def cmd_align(args: argparse.Namespace) -> int:
    import json as _json

    from ..atomic import atomic_path
    from ..errors import InputError
    from ..imaging import save_png
    from ..pipeline.align import MIN_SCORE, align, detect_faces
    from ..pipeline.video_io import read_image

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
    from ..runtime.jobs import animate_photo

    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    directions = directions_for(G, args, space=None)  # --space says where the photo is embedded
    perceptual = None
    if args.perceptual != "none":
        from ..checkpoints.vgg16 import load_vgg16
        from ..models.vgg16 import PerceptualDistance

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
