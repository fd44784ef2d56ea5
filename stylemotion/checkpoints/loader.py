"""``load_generator`` / ``save_generator``: one entry point for every generator weight format.

Formats are told apart by content, not by file name:

==================  ===============================================  ==========================================
format              what it is                                       how it is read
==================  ===============================================  ==========================================
``stylemotion``     safetensors + JSON config (``save_generator``)   safetensors (no pickle at all)
``network_pickle``  stylegan2-ada-pytorch / stylegan3 ``.pkl``       our restricted unpickler (never runs code)
``state_dict``      ``torch.save(G_ema.state_dict())``               ``torch.load(weights_only=True)``
``rosinality``      rosinality ``.pt`` with ``g_ema``                ``torch.load(weights_only=True)``
``builtin``         ``ffhq-256`` / ``ffhq-512`` / ``ffhq-1024``      config-f with seeded random weights
``bundled``         ``digiface-64``                                  trained, shipped in the package (safetensors)
==================  ===============================================  ==========================================
"""
from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError, StylemotionError, UnsafeCheckpointError
from ..models.stylegan2 import Generator, GeneratorConfig
from .bundled import BUNDLED_MODELS, NOTES, bundled_file, is_bundled
from .builtin import BUILTIN_CONFIGS, BUILTIN_SEED, W_AVG_SAMPLES, random_generator
from .native import read_native, write_native
from .network_pickle import generator_record, read_network_pickle
from .official import generator_from_state_dict, infer_config, looks_official, state_dict_from_generator
from .rosinality import official_from_rosinality, rosinality_from_official

WRITABLE_FORMATS = ("stylemotion", "state_dict", "rosinality")
# torch.save's legacy (non-zip) files start with a pickled magic number (protocol 2, LONG1 of 10 bytes).
_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a loaded generator came from. ``random_weights`` is True for built-in names."""

    format: str
    path: str
    random_weights: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def detect_format(path: str | os.PathLike) -> str:
    """``'builtin'``, ``'bundled'``, ``'stylemotion'``, ``'torch'`` (a torch.save file: state dict or rosinality) or
    ``'network_pickle'``. Raises CheckpointError for a missing, empty or unrecognised file."""
    name = str(path)
    if name in BUILTIN_CONFIGS and not Path(name).exists():
        return "builtin"
    if is_bundled(name):
        return "bundled"
    p = Path(name)
    if not p.is_file():
        hint = f" (built-in models: {', '.join(BUNDLED_MODELS + tuple(BUILTIN_CONFIGS))})"
        raise CheckpointError(f"{name}: no such file{hint}")
    with open(p, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{name}: the file is empty")
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_PREFIX):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size:
        return "stylemotion"
    if head[:1] == b"\x80":
        return "network_pickle"
    raise CheckpointError(f"{name}: not a recognised generator file (expected a stylemotion .safetensors, a "
                          "network .pkl, a torch.save state dict or a rosinality checkpoint)")


def _read_torch(path: Path) -> Any:
    where = str(path)
    try:
        # rosinality stores its argparse options beside the weights; Namespace is plain data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UnsafeCheckpointError(f"{where}: refused by the weights-only loader: {str(exc).splitlines()[0]}") from exc
        raise CheckpointError(f"{where}: cannot unpickle ({exc}); is the file truncated or corrupt?") from exc
    except Exception as exc:  # zip reader and storage errors for truncated files come in several types
        raise CheckpointError(f"{where}: cannot read the torch file ({type(exc).__name__}: {exc}); "
                              "is it truncated or corrupt?") from exc


def _overridden(config: GeneratorConfig, overrides: Mapping[str, Any] | None, where: str) -> GeneratorConfig:
    if not overrides:
        return config
    try:
        return GeneratorConfig.from_dict({**config.to_dict(), **dict(overrides)})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{where}: config override {dict(overrides)} is invalid ({exc})") from exc


def _estimate_w_avg(G: Generator, seed: int = BUILTIN_SEED) -> None:
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn([W_AVG_SAMPLES, G.z_dim], generator=rng)
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(dim=0))


def load_generator(path: str | os.PathLike, *, config: GeneratorConfig | Mapping[str, Any] | None = None,
                   device: str | torch.device = "cpu") -> Generator:
    """Load a StyleGAN2 generator from any supported file (or a built-in name) in eval mode on ``device``.

    ``config``: a full GeneratorConfig (used as is for state dicts), or a mapping of overrides applied to what the
    file says or implies (e.g. ``{"num_fp16_res": 4, "conv_clamp": 256}`` for an official state dict, whose keys
    cannot tell them). The result carries ``G.checkpoint_info`` (a CheckpointInfo).
    """
    where = str(path)
    try:
        return _load(path, where, config, device)
    except StylemotionError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, RuntimeError, RecursionError) as exc:
        # A malformed file reaches conversion code with values of the wrong kind (a 1-D conv weight, a string
        # where a size belongs); say which file, and keep the original error chained.
        raise CheckpointError(f"{where}: malformed generator checkpoint ({type(exc).__name__}: {exc})") from exc


def _load(path, where: str, config, device) -> Generator:
    fmt = detect_format(path)
    full = config if isinstance(config, GeneratorConfig) else None
    overrides = None if full is not None else config
    notes: list[str] = []
    if fmt == "builtin":
        cfg = full or _overridden(BUILTIN_CONFIGS[where], overrides, where)
        G = random_generator(cfg)
        info = CheckpointInfo("builtin", where, random_weights=True,
                              notes=(f"{where} is a built-in config-f with seeded RANDOM weights (seed {BUILTIN_SEED}, "
                                     "nothing downloaded): images are not faces; pass a real checkpoint for faces",))
        return _finish(G, info, device)
    if fmt == "bundled":
        tensors, cfg = read_native(bundled_file(where, "generator"))
        G = generator_from_state_dict(tensors, full or _overridden(cfg, overrides, where), where=where)
        return _finish(G, CheckpointInfo("bundled", where, notes=(NOTES[where],)), device)
    if fmt == "stylemotion":
        tensors, cfg = read_native(path)
        G = generator_from_state_dict(tensors, full or _overridden(cfg, overrides, where), where=where)
    elif fmt == "network_pickle":
        with open(path, "rb") as f:
            data = read_network_pickle(f, where=where)
        init_kwargs, tensors = generator_record(data, where=where)
        try:
            cfg = GeneratorConfig.from_init_kwargs(init_kwargs)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: G_ema init kwargs: {exc}") from exc
        G = generator_from_state_dict(tensors, full or _overridden(cfg, overrides, where), where=where)
    else:
        data = _read_torch(Path(path))
        if isinstance(data, Mapping) and "g_ema" in data:
            fmt = "rosinality"
            sd, cfg, has_avg = official_from_rosinality(data, where=where)
            G = generator_from_state_dict(sd, full or _overridden(cfg, overrides, where), where=where)
            if not has_avg:
                _estimate_w_avg(G)
                notes.append(f"no latent_avg in the checkpoint: w_avg estimated from {W_AVG_SAMPLES} mapped latents")
        elif isinstance(data, Mapping) and looks_official(data):
            fmt = "state_dict"
            cfg = full or infer_config(data, where=where, overrides=overrides)
            G = generator_from_state_dict(data, cfg, where=where)
        elif isinstance(data, Mapping) and isinstance(data.get("G_ema"), Mapping) and looks_official(data["G_ema"]):
            fmt = "state_dict"
            cfg = full or infer_config(data["G_ema"], where=where, overrides=overrides)
            G = generator_from_state_dict(data["G_ema"], cfg, where=where)
        else:
            keys = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
            raise CheckpointError(f"{where}: a torch file, but neither an official generator state dict (no "
                                  f"'synthesis.b4.const') nor a rosinality checkpoint (no 'g_ema'); top level: {keys}")
    return _finish(G, CheckpointInfo(fmt, where, notes=tuple(notes)), device)


def _finish(G: Generator, info: CheckpointInfo, device: str | torch.device) -> Generator:
    G.checkpoint_info = info
    return G.to(device)


def save_generator(G: Generator, path: str | os.PathLike, *, format: str = "stylemotion") -> Path:
    """Write ``G`` in one of WRITABLE_FORMATS, atomically (a temporary file renamed when complete)."""
    if format not in WRITABLE_FORMATS:
        raise ConfigError(f"format must be one of {WRITABLE_FORMATS}, got {format!r}")
    sd = state_dict_from_generator(G)
    if format == "stylemotion":
        return write_native(path, sd, G.config)
    payload = sd if format == "state_dict" else rosinality_from_official(sd, G.config)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
