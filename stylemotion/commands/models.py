"""Commands about the networks themselves: ``info``, ``export`` (ONNX), ``build`` (TensorRT plans), ``engines``
(the cache), ``bench`` and ``distill`` (training the bundled face model).

Each ``cmd_*`` takes the parsed arguments and returns an exit code; ``cli.py`` declares the arguments. Heavy
imports happen inside each command, so ``stylemotion --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .inputs import batch_profile, load_model


def cmd_info(args: argparse.Namespace) -> int:
    G = load_model(args.ckpt, "cpu")
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


def cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoints.vgg16 import load_vgg16
    from ..export.networks import (emotion_cnn_spec, lstm_specs, mapping_spec, synthesis_cpu_spec,
                                  synthesis_fp16_spec, synthesis_noise_spec, synthesis_spec, vgg16_spec)
    from ..export.onnx_export import export_onnx

    profile = batch_profile(args.batch)
    G = load_model(args.ckpt, "cpu")
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
        from ..pipeline.sequence import load_lstm

        specs += lstm_specs(load_lstm(args.lstm), profile)
    if args.emotion_cnn is not None:
        from ..checkpoints.emotion_cnn import load_emotion_cnn

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
    from ..engines.cache import EngineCache
    from ..engines.factory import tensorrt_engine

    if args.backend != "tensorrt":
        raise ConfigError("only TensorRT plans are prebuilt; torch and onnxruntime engines need no build step")
    onnx_file = Path(args.onnx) / "synthesis.onnx" if Path(args.onnx).is_dir() else Path(args.onnx)
    if not onnx_file.is_file():
        raise ConfigError(f"{onnx_file}: no such ONNX file (make one with `stylemotion export`)")
    G = load_model(args.ckpt, "cpu")
    engine = tensorrt_engine(G, onnx_file, precision=args.precision, profile=batch_profile(args.batch),
                             cache=EngineCache(args.cache))
    print(f"{engine.info.backend} {engine.info.precision} on {engine.info.device}: {engine.info.detail}")
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from ..engines.cache import EngineCache

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


def cmd_bench(args: argparse.Namespace) -> int:
    from ..benchmark import run, settings_from_args

    result = run(settings_from_args(args), log=lambda m: print(m, flush=True))
    return 0 if result["rows"] else 1


def cmd_distill(args: argparse.Namespace) -> int:
    import torch

    from ..atomic import atomic_path
    from ..checkpoints import save_generator
    from ..pipeline.distill import DistillConfig, Distiller, load_classifier, load_teacher, student_config
    from ..runtime.jobs import compare_to_teacher

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_n < 1:
        raise ConfigError(f"--eval-n must be a positive number of held-out z, got {args.eval_n}")
    cfg = DistillConfig(kimg=args.kimg, batch=args.batch, lr=args.lr, objective=args.objective,
                        fer_weight=args.fer_weight, adv_weight=args.adv_weight,
                        perceptual_weight=args.perceptual_weight, seed=args.seed).validate()
    architecture = student_config(args.width) if args.width is not None else None
    teacher, classifier = load_teacher(args.teacher), load_classifier(args.classifier)
    run = Distiller(args.out, cfg, teacher=teacher, classifier=classifier, init=args.init, device=args.device,
                    amp=args.amp, student_config=architecture)
    total = run.cfg.total_steps
    print(f"distill: {run.step}/{total} steps of {run.cfg.batch} done in {args.out}; on {run.device}, amp "
          f"{'bf16' if run.amp_dtype is not None else 'none'}", file=sys.stderr)
    seconds = args.seconds if args.seconds is not None else (args.minutes * 60 if args.minutes else None)
    step = run.run(progress=not args.quiet, max_seconds=seconds)
    finished = step >= total
    if not finished:
        print(f"stopped at step {step}/{total}; run the same command again to continue")
        if not args.snapshot:
            return 0
    G = run.finished_student()
    out = Path(args.out)
    save_generator(G, out / "generator.safetensors")
    report = {**compare_to_teacher(G, teacher, classifier, n=args.eval_n, batch=min(50, args.eval_n)),
              "finished": finished, "step": step, "kimg": run.kimg_done, "target_kimg": run.cfg.kimg,
              "batch": run.cfg.batch, "objective": run.cfg.objective, "this_call": run.last_run,
              "student_config": run.G.config.to_dict()}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'generator.safetensors'}: held-out PSNR {report['psnr_mean']:.2f} dB (median "
          f"{report['psnr_median']:.2f}), FER argmax agreement {report['fer_agreement']:.1%}, sharpness {report['sharpness_ratio']:.2f} of the teacher's on {report['n']} z"
          f"{'' if finished else ' (a snapshot: training is not finished)'}")
    return 0
