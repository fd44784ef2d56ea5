"""The arithmetic of StyleGAN2 in plain PyTorch: FIR resampling, modulated convolution, bias + activation.

These are the reference implementations (the specification) of the ops that NVlabs' StyleGAN2 code ships as
custom CUDA kernels (``upfirdn2d``, ``bias_act``, ``conv2d_resample``). Everything is written with ordinary
PyTorch ops so that the same code runs on CPU, CUDA and through the ONNX exporter.

Alphabet: ``x [N, C, H, W]`` activations, ``weight [O, I, k, k]``, ``styles [N, I]``, ``f [fh, fw]`` FIR filter.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

LRELU_ALPHA = 0.2
LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """Separable FIR filter from 1-D taps: the outer product, normalised to sum 1. ``[1,3,3,1] -> [4, 4]``."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, padding: Sequence[int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, then convolve every channel with the 2-D filter ``f``.

    ``padding`` is ``(left, right, top, bottom)``, all >= 0. A 2-D filter is scaled by ``gain`` (the official
    ``gain ** (f.ndim / 2)``). The filter is flipped so that this is a true convolution, as in the official op.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    if min(padding) < 0:
        raise ValueError(f"upfirdn2d padding must be non-negative, got {tuple(padding)}")
    if any(padding):
        x = F.pad(x, [px0, px1, py0, py1])
    kernel = (f * gain).to(x.dtype).flip([0, 1])
    kernel = kernel[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, kernel, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """StyleGAN2's image upsampling: ``[N, C, H, W] -> [N, C, up*H, up*W]`` (zero-stuff, pad, FIR, gain up**2)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor | None, *, up: int = 1,
                    padding: int = 0, groups: int = 1) -> torch.Tensor:
    """Convolution with optional 2x upsampling, as the official ``conv2d_resample`` fast path does it.

    ``up=1``: ``F.conv2d`` (correlation) with ``padding``. ``up=2``: a stride-2 transposed convolution (a true
    convolution of the zero-stuffed input, size ``2H+k-2``) followed by the FIR filter with gain 4, size ``2H``.
    """
    if up == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    if up != 2 or f is None:
        raise ValueError(f"conv2d_resample supports up=1 or up=2 with a filter, got up={up}")
    out_channels, in_per_group, kh, kw = weight.shape
    fw = f.shape[-1]
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    if groups == 1:
        wt = weight.transpose(0, 1)
    else:
        wt = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
    return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up * up)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``d[n, o] = rsqrt(sum_{i,kh,kw} (W[o,i,kh,kw] * s[n,i])**2 + eps)`` without materialising ``[N,O,I,k,k]``."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     noise: torch.Tensor | None = None, up: int = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                     fused: bool = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution: ``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``styles [N, I]``.

    ``fused=True``: per-sample weights ``W * s`` (demodulated) and one grouped convolution over the batch, as the
    official inference path. ``fused=False``: the batch-independent form (scale activations by ``s``, convolve
    with the shared weight, scale the output by the demodulation coefficients), which one exported graph can
    serve at any batch size. Both compute the same function. ``noise`` is added after demodulation.
    """
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise (as the official code does) so that FP16 intermediate sums cannot overflow.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=n)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, *, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """``clamp(act(x + bias) * gain, -clamp, clamp)`` with the bias broadcast over dim 1 (official order)."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA)
    elif act != "linear":
        raise ValueError(f"bias_act: unsupported activation {act!r} (lrelu or linear)")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x * rsqrt(mean(x**2) + eps)`` along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
