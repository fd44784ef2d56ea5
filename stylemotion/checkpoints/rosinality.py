"""rosinality/stylegan2-pytorch checkpoints (``{"g_ema": state_dict, "latent_avg": ...}``), both ways.

The two codebases compute the same network with different parameter layouts:

============================================  ==============================================
rosinality ``g_ema``                          official (stylegan2-ada-pytorch)
============================================  ==============================================
``style.{i+1}.weight / .bias``                ``mapping.fc{i}.weight / .bias`` (same lr 0.01 convention)
``input.input [1, C, 4, 4]``                  ``synthesis.b4.const [C, 4, 4]``
``conv1.*``, ``to_rgb1.*``                    ``synthesis.b4.conv1.*``, ``synthesis.b4.torgb.*``
``convs.{2j}.*``, ``convs.{2j+1}.*``          ``synthesis.b{8*2**j}.conv0.*``, ``.conv1.*``
``to_rgbs.{j}.*``                             ``synthesis.b{8*2**j}.torgb.*``
``<conv>.conv.weight [1, O, I, k, k]``        ``<layer>.weight [O, I, k, k]``
``<conv>.conv.modulation.weight / .bias``     ``<layer>.affine.weight / .bias``
``<conv>.noise.weight [1]``                   ``<layer>.noise_strength []``
``<conv>.activate.bias``                      ``<layer>.bias``
``<rgb>.bias [1, 3, 1, 1]``                   ``torgb.bias [3]``
``noises.noise_{l} [1, 1, r, r]``             ``noise_const [r, r]`` of the l-th conv layer
``latent_avg`` (top level, optional)          ``mapping.w_avg``
============================================  ==============================================

rosinality multiplies conv weights by ``1/sqrt(fan_in)`` before demodulating; demodulation cancels the scale
(up to the 1e-8 epsilon), and ToRGB's ``1/sqrt(in)`` equals the official ToRGB style gain, so weights are copied
unchanged. Its blur/upsample kernels must be the standard ``[1, 3, 3, 1]`` ones.

rosinality's generator takes a channel table (``channels[res]``, scaled by ``channel_multiplier`` from 64x64 up),
not a formula; the table is read off the conv weights' shapes, and one that ``min(channel_base // res,
channel_max)`` cannot express becomes the config's explicit ``channels_per_res``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..models.stylegan2 import GeneratorConfig
from ..models.stylegan2_ops import setup_filter
from .official import infer_channel_params


def _conv_names(num_blocks: int) -> list[tuple[str, str, int]]:
    """``(rosinality prefix, official prefix, resolution)`` for every conv layer, in noise-index order."""
    names = [("conv1", "synthesis.b4.conv1", 4)]
    for j in range(num_blocks - 1):
        res = 8 * 2 ** j
        names.append((f"convs.{2 * j}", f"synthesis.b{res}.conv0", res))
        names.append((f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", res))
    return names


def _rgb_names(num_blocks: int) -> list[tuple[str, str]]:
    return [("to_rgb1", "synthesis.b4.torgb")] + [(f"to_rgbs.{j}", f"synthesis.b{8 * 2 ** j}.torgb")
                                                  for j in range(num_blocks - 1)]


def _get(sd: Mapping[str, Any], key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{where}: missing key 'g_ema.{key}'")
    value = sd[key]
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{where}: key 'g_ema.{key}' is a {type(value).__name__}, expected a tensor")
    return value


def official_from_rosinality(ckpt: Mapping[str, Any], *, where: str) -> tuple[dict[str, torch.Tensor], GeneratorConfig, bool]:
    """Convert a rosinality checkpoint. Returns the official state dict, its config and whether ``latent_avg``
    was present (when it is not, ``mapping.w_avg`` is left at zero for the caller to estimate)."""
    sd = ckpt.get("g_ema")
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{where}: 'g_ema' is missing or not a state dict")
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    num_blocks = 1 + len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    if n_mlp == 0:
        raise CheckpointError(f"{where}: no mapping layers 'g_ema.style.<i>.weight'")
    style_dim = int(_get(sd, "style.1.weight", where).shape[0])
    known_kernel = setup_filter([1, 3, 3, 1]) * 4
    for key, value in sd.items():
        if key.endswith(("blur.kernel", "upsample.kernel")) and not torch.allclose(value.float(), known_kernel):
            raise CheckpointError(f"{where}: key 'g_ema.{key}' is not the [1,3,3,1] blur kernel; not supported")

    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight", where)
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias", where)
    const = _get(sd, "input.input", where)
    out["synthesis.b4.const"] = const[0]
    filt = setup_filter([1, 3, 3, 1])
    for layer, (src, dst, res) in enumerate(_conv_names(num_blocks)):
        weight = _get(sd, f"{src}.conv.weight", where)
        if weight.ndim != 5 or weight.shape[0] != 1:
            raise CheckpointError(f"{where}: key 'g_ema.{src}.conv.weight' has shape {list(weight.shape)}, "
                                  "expected [1, out, in, k, k]")
        out[f"{dst}.weight"] = weight[0]
        out[f"{dst}.noise_strength"] = _get(sd, f"{src}.noise.weight", where).reshape([])
        out[f"{dst}.bias"] = _get(sd, f"{src}.activate.bias", where)
        out[f"{dst}.resample_filter"] = filt
        out[f"{dst}.noise_const"] = _get(sd, f"noises.noise_{layer}", where).reshape(res, res)
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        if dst.endswith("conv1"):
            out[dst.rsplit(".", 1)[0] + ".resample_filter"] = filt
    img_channels = 3
    for src, dst in _rgb_names(num_blocks):
        weight = _get(sd, f"{src}.conv.weight", where)
        out[f"{dst}.weight"] = weight[0]
        out[f"{dst}.bias"] = _get(sd, f"{src}.bias", where).reshape(-1)
        out[f"{dst}.affine.weight"] = _get(sd, f"{src}.conv.modulation.weight", where)
        out[f"{dst}.affine.bias"] = _get(sd, f"{src}.conv.modulation.bias", where)
        img_channels = int(weight.shape[1])
    has_avg = isinstance(ckpt.get("latent_avg"), torch.Tensor)
    out["mapping.w_avg"] = ckpt["latent_avg"].reshape(-1)[:style_dim] if has_avg else torch.zeros(style_dim)
    out_channels = {4 * 2 ** j: int(out[f"synthesis.b{4 * 2 ** j}.conv1.weight"].shape[0]) for j in range(num_blocks)}
    try:
        config = GeneratorConfig(z_dim=style_dim, w_dim=style_dim, img_resolution=4 * 2 ** (num_blocks - 1),
                                 img_channels=img_channels, mapping_layers=n_mlp,
                                 **infer_channel_params(out_channels)).validate()
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    return out, config, has_avg


def rosinality_from_official(sd: Mapping[str, torch.Tensor], config: GeneratorConfig) -> dict[str, Any]:
    """The inverse conversion: a ``{"g_ema": ..., "latent_avg": ...}`` checkpoint rosinality's code loads."""
    if config.z_dim != config.w_dim or config.c_dim or config.architecture != "skip":
        raise CheckpointError("rosinality checkpoints need z_dim == w_dim, c_dim == 0 and the 'skip' architecture; "
                              f"this generator has z_dim={config.z_dim}, w_dim={config.w_dim}, c_dim={config.c_dim}, "
                              f"architecture={config.architecture!r}")
    if config.mapping_layer_features not in (None, config.w_dim) or config.mapping_lr_multiplier != 0.01:
        raise CheckpointError("rosinality checkpoints need mapping layers of width w_dim and lr multiplier 0.01")
    num_blocks = len(config.block_resolutions)
    kernel = setup_filter([1, 3, 3, 1]) * 4
    g: dict[str, torch.Tensor] = {}
    for i in range(config.mapping_layers):
        g[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        g[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    g["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
    for layer, (dst, src, res) in enumerate(_conv_names(num_blocks)):
        g[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        g[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        g[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        if src.endswith("conv0"):
            g[f"{dst}.conv.blur.kernel"] = kernel
        g[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        g[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        g[f"noises.noise_{layer}"] = sd[f"{src}.noise_const"].reshape(1, 1, res, res)
    for j, (dst, src) in enumerate(_rgb_names(num_blocks)):
        if j > 0:
            g[f"{dst}.upsample.kernel"] = kernel
        g[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        g[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        g[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        g[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
    g = {k: v.detach().clone().contiguous() for k, v in g.items()}
    return {"g_ema": g, "latent_avg": sd["mapping.w_avg"].detach().clone()}
