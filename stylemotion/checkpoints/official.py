"""The official stylegan2-ada-pytorch state-dict layout: config inference from key shapes, strict loading.

Every other format is converted to this layout (``mapping.fc0.weight``, ``synthesis.b4.const``, ...) and loaded
here, so key and shape errors are reported in one place, naming the file and the key.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..models.stylegan2 import Generator, GeneratorConfig

OFFICIAL_MARKER = "synthesis.b4.const"
_STYLEGAN3_MARKERS = ("synthesis.input.affine.weight", "synthesis.input.freqs")


def looks_official(sd: Mapping[str, Any]) -> bool:
    return OFFICIAL_MARKER in sd or any(k in sd for k in _STYLEGAN3_MARKERS)


def infer_channel_params(channels: Mapping[int, int]) -> dict[str, Any]:
    """The config entries that give ``channels`` (resolution -> feature channels, every block of a generator).

    ``{"channel_base": base, "channel_max": max}`` when ``min(base // res, max) == channels[res]`` for every
    resolution (preferring the official base 32768 when it fits), otherwise the explicit table
    ``{"channels_per_res": {res: channels}}`` (rosinality's ``channel_multiplier=4``, forks that change the table).
    """
    cmax = max(channels.values())
    lo, hi = 1, 1 << 40
    for res, ch in channels.items():
        lo = max(lo, ch * res)
        if ch < cmax:
            hi = min(hi, (ch + 1) * res - 1)
    base = 32768 if lo <= 32768 <= hi else lo
    if lo > hi or any(min(base // r, cmax) != c for r, c in channels.items()):
        return {"channels_per_res": dict(sorted(channels.items()))}
    return {"channel_base": base, "channel_max": cmax}


def infer_config(sd: Mapping[str, torch.Tensor], *, where: str, overrides: Mapping[str, Any] | None = None) -> GeneratorConfig:
    """Read the architecture off an official state dict's keys and shapes.

    What the keys cannot tell (``num_fp16_res``, ``conv_clamp``, the mapping's lr multiplier) takes the official
    defaults (0, None, 0.01) unless ``overrides`` gives it. Channel counts that the official formula cannot
    express become an explicit ``channels_per_res`` table.
    """
    if any(k in sd for k in _STYLEGAN3_MARKERS):
        raise CheckpointError(f"{where}: this is a StyleGAN3 (alias-free) generator; only StyleGAN2 is supported")
    if any(k.startswith("synthesis.") and ".skip." in k for k in sd):
        raise CheckpointError(f"{where}: 'resnet' synthesis architecture (key with '.skip.') is not supported")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: entries that are not name -> tensor: {bad[:4]}")
    fc = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if not fc or fc != list(range(len(fc))):
        raise CheckpointError(f"{where}: mapping layers 'mapping.fc<i>.weight' missing or not numbered 0..n-1 (found {fc})")
    resolutions = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if not resolutions or resolutions != [2 ** i for i in range(2, 2 + len(resolutions))]:
        raise CheckpointError(f"{where}: synthesis blocks 'synthesis.b<res>.conv1.weight' are not 4, 8, 16, ... "
                              f"(found {resolutions})")
    first, last = sd["mapping.fc0.weight"], sd[f"mapping.fc{fc[-1]}.weight"]
    embed = sd.get("mapping.embed.weight")
    c_dim = int(embed.shape[1]) if embed is not None else 0
    embed_features = int(embed.shape[0]) if embed is not None else 0
    w_dim = int(last.shape[0])
    img_res = resolutions[-1]
    rgb_key = f"synthesis.b{img_res}.torgb.weight"
    if rgb_key not in sd:
        raise CheckpointError(f"{where}: missing key {rgb_key!r} (the last block's ToRGB)")
    channels = {res: int(sd[f"synthesis.b{res}.conv1.weight"].shape[0]) for res in resolutions}
    cfg: dict[str, Any] = {
        "z_dim": int(first.shape[1]) - embed_features, "w_dim": w_dim, "c_dim": c_dim,
        "img_resolution": img_res, "img_channels": int(sd[rgb_key].shape[0]), "mapping_layers": len(fc),
        **infer_channel_params(channels),
        "architecture": "skip" if len(resolutions) == 1 or "synthesis.b4.torgb.weight" in sd else "orig",
    }
    if len(fc) > 1 and int(first.shape[0]) != w_dim:
        cfg["mapping_layer_features"] = int(first.shape[0])
    if embed is not None and embed_features != w_dim:
        cfg["mapping_embed_features"] = embed_features
    cfg.update(overrides or {})
    try:
        return GeneratorConfig.from_dict(cfg)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def generator_from_state_dict(sd: Mapping[str, torch.Tensor], config: GeneratorConfig, *, where: str) -> Generator:
    """Build a Generator and load ``sd`` strictly: every key present, none extra, every shape equal."""
    with torch.device("meta"):
        G = Generator(config)
    expected = G.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_head(unexpected)}")
        raise CheckpointError(f"{where}: state dict does not match the generator config ({'; '.join(parts)})")
    tensors = {}
    for key, ref in expected.items():
        value = sd[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: key {key!r} is a {type(value).__name__}, expected a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: key {key!r} has shape {list(value.shape)}, expected {list(ref.shape)}")
        if not value.is_floating_point():
            raise CheckpointError(f"{where}: key {key!r} has dtype {value.dtype}, expected a floating-point tensor")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: key {key!r} holds NaN or infinite values")
        tensors[key] = value.detach().to("cpu", torch.float32).contiguous()
    G.load_state_dict(tensors, strict=True, assign=True)
    return G.requires_grad_(False).eval()


def state_dict_from_generator(G: Generator) -> dict[str, torch.Tensor]:
    """The official-layout state dict (float32, CPU, contiguous, no shared storage)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in G.state_dict().items()}


def _head(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}] ({len(keys)} in all)"
