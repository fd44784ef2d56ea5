"""What several commands take, turned into library objects: the device, the engine options, the generator,
directions (and the check that a script's emotions have one), the LSTM, an embedded identity, a batch profile."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError


def pick_device(name: str) -> str:
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


def batch_size(args: argparse.Namespace, G) -> int:
    """``--batch`` if given, else 8 on CUDA and 1 on the CPU (where batching does not help; bench/results)."""
    if args.batch is not None:
        if args.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {args.batch}")
        return args.batch
    return 8 if G.mapping.w_avg.device.type == "cuda" else 1


def engine_options(args: argparse.Namespace) -> dict:
    """How the runtime opens its engine: ``--backend``, ``--device``, ``--onnx``, ``--precision``. The generator
    stays on the CPU; the engine takes its own copy to the device."""
    batch = getattr(args, "batch", None)
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    return {"backend": args.backend, "device": pick_device(args.device), "onnx_path": getattr(args, "onnx", None),
            "precision": getattr(args, "precision", None)}


def load_model(ckpt: str, device: str):
    from ..checkpoints import load_generator

    G = load_generator(ckpt, device=pick_device(device))
    for note in G.checkpoint_info.notes:
        print(f"note: {note}", file=sys.stderr)
    return G


def emotion_list(text: str | None) -> list[str] | None:
    from ..pipeline.directions import emotion_id
    from ..models.emotion_cnn import EMOTIONS

    if not text:
        return None
    return [EMOTIONS[emotion_id(t, where="--emotions")] for t in text.split(",")]


def directions_for(G, args: argparse.Namespace, *, space: str | None | bool = True):
    """``--directions`` (a .npz, a folder of .npy, EMOTION=FILE.npy pairs, or 'random') for use in ``--space``
    (``space``: True for ``args.space``, else the space to ask for; None: the directions' own); left out, a
    bundled model's own."""
    from ..checkpoints.bundled import BUNDLED_MODELS
    from ..pipeline.directions import load_directions

    if space is True:
        space = args.space
    if args.directions is None:
        own = own_directions(G)
        if own is None:
            raise ConfigError(f"--directions is required for {args.ckpt} (only bundled models ship their own: "
                              f"{', '.join(BUNDLED_MODELS)}); 'random' gives seeded random directions for a demo")
        return own.in_space(space)
    if args.directions == "random":
        print("note: --directions random: seeded random unit W directions (for demos; not learned emotions)",
              file=sys.stderr)
    return load_directions(args.directions, space=space, w_dim=G.w_dim)


def check_script(script: str | None, directions, G) -> None:
    """Before any rendering: a script naming an emotion the directions (None: a bundled model's own) lack fails,
    listing those they hold."""
    if script is None:
        return
    if directions is None:
        directions = own_directions(G)
    if directions is not None:
        from ..pipeline.keyframes import parse_script

        parse_script(script, directions=directions)


def own_directions(G):
    """A bundled model's own directions (None for any other model)."""
    import dataclasses

    from ..checkpoints.bundled import bundled_name, own_asset
    from ..pipeline.directions import load_directions

    own = own_asset(G, "directions")
    if own is None:
        return None
    return dataclasses.replace(load_directions(own, w_dim=G.w_dim), source=f"{bundled_name(G)}'s own {own.name}")


def lstm_for(G, path: str | None) -> str:
    """``--lstm``, else a bundled model's own LSTM; without either, a ConfigError."""
    from ..checkpoints.bundled import own_asset

    own = path or own_asset(G, "lstm")
    if own is None:
        raise ConfigError("--predict needs --lstm (the emotion LSTM from `stylemotion train-lstm`)")
    return str(own)


def identity_for(G, spec: str | None):
    """``--identity FILE.npz[:INDEX]`` -> ws ``[1, num_ws, w_dim]`` (None without the flag)."""
    if spec is None:
        return None
    import torch

    from ..pipeline.latents_io import read_identity

    return torch.as_tensor(read_identity(spec, num_ws=G.num_ws, w_dim=G.w_dim))[None]


def batch_profile(text: str):
    from ..export.spec import BatchProfile

    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError as exc:
        raise ConfigError(f"--batch {text!r}: expected MIN:OPT:MAX, e.g. 1:8:32") from exc
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"--batch {text!r}: need 1 <= min <= opt <= max")
    return BatchProfile(lo, opt, hi)
