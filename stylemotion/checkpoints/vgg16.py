"""VGG16 weights: torchvision's ImageNet file, NVIDIA's LPIPS ``vgg16.pt`` (TorchScript), or seeded random.

``load_vgg16(path)`` returns ``(vgg, lpips_weights)``: the VGG16 module (``vgg.random_weights`` tells whether
real weights were loaded) and LPIPS' five per-channel linear weights when the file carries them, else None.

* torchvision (``vgg16-397923af.pth``): a ``torch.save`` state dict with ``features.N.weight`` / ``.bias``
  (``classifier.*`` is ignored); read with ``torch.load(weights_only=True)``.
* NVIDIA's ``vgg16.pt`` (used by the official StyleGAN2 projector): a TorchScript archive. Its code is never
  loaded; its tensors are read (torchscript.py) and matched by shape and order: the 13 VGG16 conv weights with
  their biases, and the five ``[1, C, 1, 1]`` LPIPS linear weights for C = 64, 128, 256, 512, 512.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from ..models.vgg16 import CONV_INDEX, LPIPS_CHANNELS, VGG16, random_vgg16
from .torchscript import is_torchscript_archive, read_torchscript_tensors


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in VGG16().state_dict().items()}


def _vgg_from_state_dict(sd: dict[str, torch.Tensor], where: str, source: str) -> VGG16:
    expected = _expected_shapes()
    missing = [k for k in expected if k not in sd]
    if missing:
        raise CheckpointError(f"{where}: not a VGG16 state dict: missing keys {missing[:4]}"
                              f"{' ...' if len(missing) > 4 else ''} ({len(missing)} in all)")
    tensors = {}
    for key, shape in expected.items():
        value = sd[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{where}: key {key!r} has shape {got}, expected {list(shape)}")
        tensors[key] = value.detach().float().contiguous()
    with torch.device("meta"):
        vgg = VGG16()
    vgg.load_state_dict(tensors, strict=True, assign=True)
    vgg.random_weights, vgg.source = False, source
    return vgg.requires_grad_(False).eval()


def _from_torchscript(path: str) -> tuple[VGG16, list[torch.Tensor] | None]:
    tensors = read_torchscript_tensors(path)
    expected = _expected_shapes()
    conv_shapes = [expected[f"features.{CONV_INDEX[name]}.weight"] for name in CONV_INDEX]
    weights = [(k, v) for k, v in tensors.items() if v.ndim == 4 and v.shape[-2:] == (3, 3)]
    if [tuple(v.shape) for _, v in weights] != conv_shapes:
        raise CheckpointError(f"{path}: the TorchScript archive's 3x3 conv weights {[tuple(v.shape) for _, v in weights]}"
                              " are not VGG16's 13 conv layers")
    sd = {}
    for (key, weight), name in zip(weights, CONV_INDEX):
        bias_key = key[: -len("weight")] + "bias" if key.endswith("weight") else None
        bias = tensors.get(bias_key) if bias_key else None
        if bias is None or tuple(bias.shape) != (weight.shape[0],):
            raise CheckpointError(f"{path}: no bias of shape [{weight.shape[0]}] beside {key!r}")
        sd[f"features.{CONV_INDEX[name]}.weight"], sd[f"features.{CONV_INDEX[name]}.bias"] = weight, bias
    vgg = _vgg_from_state_dict(sd, path, f"lpips-torchscript:{path}")
    lins = [v for v in tensors.values() if v.ndim == 4 and v.shape[0] == 1 and v.shape[-2:] == (1, 1)]
    lins = [v for v in lins if v.shape[1] in LPIPS_CHANNELS]
    lpips = [v.reshape(-1).float() for v in lins] if [v.shape[1] for v in lins] == list(LPIPS_CHANNELS) else None
    return vgg, lpips


def load_vgg16(path: str | os.PathLike | None = None, *, seed: int = 0) -> tuple[VGG16, list[torch.Tensor] | None]:
    """VGG16 for perceptual losses: from ``path`` (torchvision or NVIDIA LPIPS file), or seeded random if None."""
    if path is None:
        return random_vgg16(seed), None
    where = str(path)
    if not Path(where).is_file():
        raise CheckpointError(f"{where}: no such VGG16 weights file")
    if is_torchscript_archive(where):
        return _from_torchscript(where)
    try:
        sd = torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"{where}: refused by the weights-only loader: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:
        raise CheckpointError(f"{where}: cannot read VGG16 weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, dict):
        raise CheckpointError(f"{where}: expected a state dict, got {type(sd).__name__}")
    return _vgg_from_state_dict(sd, where, f"torchvision:{where}"), None
