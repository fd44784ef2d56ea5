"""The per-frame arithmetic of the runtime, behind one door: keyframe interpolation and float-to-uint8.

Each op takes ``impl="auto" | "reference"``. ``reference`` is plain PyTorch on the inputs' device and is the
specification: any faster implementation added later (cpp_ext kernels, DESIGN.md section 6) is tested against it
and registered under its own name. ``auto`` picks the fastest available for the inputs' device and today that is
the reference. ``implementation(op, device)`` says which one ``auto`` runs, for engine info and stats.

Shapes: keyframes ``[K, *S]`` (``S`` = ``[num_ws, w_dim]`` for W/W+ latents, ``[z_dim]`` for Z), per-frame segment
indices ``seg [B]`` (int64, frame i lies between keyframes ``seg[i]`` and ``seg[i] + 1``) and positions
``t [B]``; images ``[N, 3, H, W]`` float in about [-1, 1]; frames ``[N, H, W, 3]`` uint8.
"""
from __future__ import annotations

import torch

from .errors import ConfigError
from .models.stylegan2 import images_to_uint8

IMPLS = ("auto", "reference")


def _impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {IMPLS}, got {impl!r}")
    return "reference"


def implementation(op: str, device: str | torch.device = "cpu") -> str:
    """The implementation ``impl="auto"`` runs for ``op`` on ``device`` (recorded in stats)."""
    if op not in ("fused_lerp", "to_uint8"):
        raise ConfigError(f"unknown op {op!r}")
    return "reference"


def fused_lerp(keyframes: torch.Tensor, seg: torch.Tensor, t: torch.Tensor, *,
               tangents: torch.Tensor | None = None, span: torch.Tensor | None = None,
               impl: str = "auto") -> torch.Tensor:
    """Latents ``[B, *S]`` between keyframes ``seg`` and ``seg + 1`` at ``t``, in one pass over the batch.

    Without ``tangents``: linear, ``a + t * (b - a)``. With ``tangents [K, *S]`` (velocity per frame at each
    keyframe) and ``span [B]`` (the frames of each frame's transition): the cubic Hermite curve whose end
    velocities are ``tangents * span``. ``t == 0`` and ``t == 1`` return the keyframes themselves, bit for bit.
    """
    _impl(impl)
    a, b = keyframes[seg], keyframes[seg + 1]
    t = t.to(keyframes.dtype).reshape((-1,) + (1,) * (a.ndim - 1))
    if tangents is None:
        between = a + t * (b - a)
    else:
        if span is None:
            raise ConfigError("fused_lerp: tangents need span (the transition length of each frame)")
        m = span.to(keyframes.dtype).reshape(t.shape)
        va, vb = tangents[seg] * m, tangents[seg + 1] * m
        t2, t3 = t * t, t * t * t
        between = (2 * t3 - 3 * t2 + 1) * a + (t3 - 2 * t2 + t) * va + (-2 * t3 + 3 * t2) * b + (t3 - t2) * vb
    return torch.where(t == 1, b, torch.where(t == 0, a, between))


def to_uint8(images: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``images [N, 3, H, W]`` float -> ``frames [N, H, W, 3]`` uint8 on the same device (``x * 127.5 + 128``,
    clamped, truncated: the official rule)."""
    _impl(impl)
    return images_to_uint8(images.float())
