"""The offline stages, learned once per model: ``embed`` (the projector), ``label`` and ``label-samples``
(emotion labels), ``directions``, ``train-lstm`` and ``predict-emotions``.

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments. Heavy
imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .inputs import batch_size, emotion_list, engine_options, load_model


def cmd_embed(args: argparse.Namespace) -> int:
    from ..checkpoints.vgg16 import load_vgg16
    from ..models.vgg16 import PerceptualDistance
    from ..pipeline.embed import Projector, ProjectorConfig, embed_frames
    from ..pipeline.video_io import iter_frames

    config = ProjectorConfig(space=args.space, steps=args.steps, initial_lr=args.lr, pixel_weight=args.pixel_weight,
                             perceptual_weight=0.0 if args.perceptual == "none" else 1.0,
                             optimize_noise=args.optimize_noise, stop_loss=args.stop_loss,
                             plateau_patience=args.plateau, amp=args.amp, seed=args.seed).validate()
    G = load_model(args.ckpt, args.device)
    batch = 1 if args.optimize_noise and args.batch is None else batch_size(args, G)
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


def cmd_label(args: argparse.Namespace) -> int:
    from ..checkpoints.emotion_cnn import load_emotion_cnn
    from ..models.emotion_cnn import EMOTIONS
    from ..pipeline.labeling import LabelingConfig, label_videos

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
    from ..checkpoints.emotion_cnn import load_emotion_cnn
    from ..runtime.jobs import label_samples

    options = engine_options(args)
    G = load_model(args.ckpt, "cpu")
    report = label_samples(G, load_emotion_cnn(args.classifier), args.out, n=args.n, seed=args.seed,
                           batch=args.batch, progress=not args.quiet, **options)
    print("argmax emotion of the classifier: " + ", ".join(f"{e} {f:.1%}" for e, f in report["fractions"].items()))
    print(f"wrote {Path(args.out) / 'latents.npz'}, labels.csv and labels.png")
    return 0


def cmd_directions(args: argparse.Namespace) -> int:
    from ..pipeline.directions import (condition, labels_from_csv, labels_from_folders, labels_from_sequences,
                                      learn_directions)
    import numpy as np

    from ..pipeline.latents_io import read_latents

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
    dirs = learn_directions(latents, labels, space=args.space, emotions=emotion_list(args.emotions),
                            test_size=args.test_size, seed=args.seed)
    for pair in args.condition or []:
        from ..models.emotion_cnn import EMOTIONS
        from ..pipeline.directions import emotion_id

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
    from ..models.emotion_lstm import LSTMConfig
    from ..pipeline.labeling import read_sequences
    from ..pipeline.sequence import TrainConfig, runs_from_sequences, save_lstm, synthetic_sequences, train_lstm

    if (args.sequences is None) == (args.synthetic is None):
        raise ConfigError("give either a sequences .jsonl or --synthetic N")
    if args.synthetic is not None:
        print(f"note: training on {args.synthetic} SYNTHETIC sequences (not observed behaviour)", file=sys.stderr)
        sequences = synthetic_sequences(args.synthetic, emotions=emotion_list(args.emotions), seed=args.seed)
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
    from ..models.emotion_cnn import EMOTIONS
    from ..pipeline.directions import emotion_id
    from ..pipeline.sequence import load_lstm, sample_emotions

    prime = [emotion_id(p, where="--prime") for p in args.prime.split(",")]
    seq = sample_emotions(load_lstm(args.lstm), prime, args.length, temperature=args.temperature, seed=args.seed)
    print(json.dumps({"emotions": seq, "names": [EMOTIONS[i] for i in seq]}))
    return 0
