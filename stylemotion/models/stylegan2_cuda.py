"""A GPU inference plan of a StyleGAN2 synthesis network: the same function, arranged for tensor cores and few
passes over memory.

``CudaSynthesis(G.synthesis)`` computes what ``G.synthesis(ws, noise_mode="const")`` computes (float32: to float
rounding, which ``make test`` checks on the CPU; FP16: by PSNR against float32 on a GPU), rearranged where a
profile of the reference at 1024², batch 32 (bench/results, 2026-12-04) showed the time going: the depthwise FIR
after each upsampling (21 %), an FP32 transposed-convolution kernel (17 %), element-wise passes (mul, add, pad,
clamp: 38 %) and layout transposes around cuDNN (7.7 %), with tensor cores doing a fifth of the work.

* **Upsampling folded into one convolution.** The official up layer is a stride-2 transposed 3x3 convolution,
  then the [1, 3, 3, 1] FIR (gain 4). Both are linear, so they compose into one stride-2 transposed convolution
  with a 6x6 kernel (the 3x3 weight convolved with the FIR), and a stride-2 transposed 6x6 convolution is four
  3x3 convolutions, one per output phase: one ordinary 3x3 convolution at the input's resolution from ``I`` to
  ``4 * O`` channels, then the phases interleaved (a pixel shuffle). No FIR pass, no transposed-convolution
  kernel, and the same tensor-core convolution as every other layer (4x the multiplies of the transposed form,
  which tensor cores have to spare; passes over memory are what cost).
* **Modulation as per-sample scales** around shared-weight convolutions at every batch size (the exported form):
  no grouped convolution with per-sample weights. The input scale of the convolution after an up layer is folded
  into that layer's epilogue; the other input scales are one pass.
* **One epilogue per layer:** demodulation and activation gain, noise and bias (one constant tensor), leaky ReLU,
  clamp and the next layer's input modulation, in one element-wise function (``epilogue``), which is also the
  PyTorch reference of the fused kernel: ``epilogue="compile"`` hands it to ``torch.compile`` (one Triton kernel
  per layer shape on a GPU), ``"eager"`` runs it as PyTorch ops.
* **FP16 channels-last end to end** (``memory_format``): every convolution reads and writes NHWC, the phases are
  interleaved in NHWC, ToRGB is a batched matrix product over NHWC pixels: no layout transposes between layers.
  ``fp16_blocks``: ``"official"`` (the ``num_fp16_res`` highest resolutions, with the official FP16
  pre-normalisation and ``conv_clamp``) or ``"all"``.
* **The skip image's 2x upsampling** is the same FIR split into phases: two taps per phase and axis (separable),
  in one function with ToRGB's bias and clamp and the skip sum (``rgb_out``). ToRGB is a batched product with its
  per-sample ``[C, 3]`` weights padded to 8 columns (a 3-wide product runs an unaligned, slow kernel).

What runs fused is chosen by measurement (bench/cuda_plan.py on an H200, 1024², batch 32: the eager epilogue
513 images/s, compiled 605; batch 1: 3.12 against 2.60 ms).

Only constant noise is planned; the plan holds its own copies of the weights (taken when it is built). A config it
cannot plan (a non-binomial FIR, a resolution that is not a power of two) raises ``ConfigError`` naming it; the
engine then renders with the reference network and says so.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..shapes import assert_shape
from .stylegan2 import LRELU_GAIN, SynthesisLayer, SynthesisNetwork, ToRGBLayer
from .stylegan2_fast import _Affine, check_plannable
from .stylegan2_ops import LRELU_ALPHA

FP16_BLOCKS = ("official", "all", "none")
EPILOGUES = ("eager", "compile")


def folded_up_weight(weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The official up layer (``conv_transpose2d(x, W^T, stride=2)`` then the FIR ``f`` with gain 4, padding 1) as
    one 3x3 convolution (padding 1) to ``4 * O`` channels ordered (row phase, column phase, output channel):
    ``weight [O, I, 3, 3]``, ``f [4, 4]`` -> ``[4 * O, I, 3, 3]``. Computed in float64.

    The 6x6 transposed kernel is ``K = conv(pad(W^T, 3), flip(4 f))`` ('valid'), and output pixel ``2b + r`` of a
    stride-2, padding-2 transposed convolution with it reads input pixels ``b - 1 .. b + 1`` through taps
    ``K[4 - 2e + r]`` (``e = 0, 1, 2``)."""
    o, i = weight.shape[:2]
    wt = weight.double().transpose(0, 1)  # [I, O, 3, 3]: the transposed convolution's kernel
    fk = (4.0 * f.double()).flip([0, 1])[None, None]  # the FIR as a correlation kernel
    k6 = F.conv2d(F.pad(wt.reshape(i * o, 1, 3, 3), [3, 3, 3, 3]), fk).reshape(i, o, 6, 6)
    phases = []
    for r in (0, 1):
        for s in (0, 1):
            rows = [4 - 2 * e + r for e in range(3)]
            cols = [4 - 2 * g + s for g in range(3)]
            phases.append(k6[:, :, rows][:, :, :, cols].transpose(0, 1))  # [O, I, 3, 3]
    return torch.cat(phases, 0).float()


def interleave_phases(z: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``[N, 4 * O, H, W]`` with channels ordered (row phase, column phase, O) -> ``[N, O, 2H, 2W]``. In
    channels-last memory this is one copy of NHWC rows (the output is channels-last too)."""
    n, c4, h, w = z.shape
    o = c4 // 4
    if channels_last:
        y = z.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, o).permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)
        return y.permute(0, 3, 1, 2)
    return z.reshape(n, 2, 2, o, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, o, 2 * h, 2 * w)


def epilogue(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, clamp: float | None,
             premod: torch.Tensor | None) -> torch.Tensor:
    """``clamp(lrelu(scale * z + shift)) * premod``: demodulation times the activation gain (``scale [N, O]``),
    noise and bias times the gain (``shift [1, O, H, W]``), leaky ReLU (``lrelu(g x) = g lrelu(x)``, g > 0), the
    clamp, and the next convolution's input modulation (``premod [N, O]``, or None). The reference of the fused
    kernel: ``torch.compile`` of this function is the kernel."""
    x = torch.addcmul(shift, z, scale[:, :, None, None])
    x = F.leaky_relu(x, LRELU_ALPHA)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    if premod is not None:
        x = x * premod[:, :, None, None]
    return x


def post_conv(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """What follows a 3x3 layer's convolution: ``epilogue`` without input modulation (its output also feeds ToRGB)."""
    return epilogue(z, scale, shift, clamp, None)


def post_conv_up(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, clamp: float | None,
                 premod: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """What follows an up layer's convolution: the phases interleaved, ``epilogue``, and the next convolution's
    input scales. Compiled, the interleave is an index computation inside the one kernel, not a copy of its own.
    (Separate functions for separate kinds of layer: each compiled function then sees few variants.)"""
    return epilogue(interleave_phases(z, channels_last), scale, shift, clamp, premod)


def modulate(x: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """A convolution's input scaled by its styles (``s [N, I]``), in the layer's dtype and memory format."""
    x = x.to(dtype) * s.to(dtype)[:, :, None, None]
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def rgb_out(y: torch.Tensor, bias: torch.Tensor, clamp: float | None, img: torch.Tensor | None) -> torch.Tensor:
    """ToRGB's epilogue and the skip path: ``clamp(y + bias)`` in float32, plus the running image upsampled 2x
    (``image_up2``) when there is one: one pass over the block's image when compiled."""
    y = y.float() + bias[None, :, None, None]
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y if img is None else image_up2(img) + y


def image_up2(img: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's 2x image upsampling with the [1, 3, 3, 1] FIR (gain 4) by phases: per axis, even outputs are
    ``0.75 x[b] + 0.25 x[b - 1]`` and odd ones ``0.75 x[b] + 0.25 x[b + 1]`` (zero beyond the edges)."""
    n, c, h, w = img.shape
    p = F.pad(img, [0, 0, 1, 1])
    rows = torch.stack([0.75 * img + 0.25 * p[:, :, :-2], 0.75 * img + 0.25 * p[:, :, 2:]], dim=3)
    img = rows.reshape(n, c, 2 * h, w)
    p = F.pad(img, [1, 1])
    cols = torch.stack([0.75 * img + 0.25 * p[..., :-2], 0.75 * img + 0.25 * p[..., 2:]], dim=4)
    return cols.reshape(n, c, 2 * h, 2 * w)


class _Layer(nn.Module):
    """One planned SynthesisLayer: styles, the shared-weight convolution (folded when it upsamples), epilogue."""

    def __init__(self, layer: SynthesisLayer, dtype: torch.dtype, memory_format: torch.memory_format):
        super().__init__()
        self.up, self.dtype, self.clamp = layer.up, dtype, layer.conv_clamp
        self.fp16 = dtype == torch.float16
        weight = layer.weight.detach().float().clone()
        o, i, kh, kw = weight.shape
        if self.fp16:  # the official FP16 pre-normalisation: the demodulation cancels it, FP16 sums stay small
            weight = weight * (1 / math.sqrt(i * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        self.affine = _Affine(layer.affine)
        self.register_buffer("wsq", weight.square().sum(dim=[2, 3]).t().contiguous())  # [I, O]
        if self.up == 2:
            weight = folded_up_weight(weight, layer.resample_filter.detach().float())
        self.register_buffer("weight", weight.to(dtype).contiguous(memory_format=memory_format))
        const = layer.noise_const.detach().float() * layer.noise_strength.detach().float()
        shift = LRELU_GAIN * (const[None] + layer.bias.detach().float()[:, None, None])[None]
        self.register_buffer("shift", shift.to(dtype).contiguous(memory_format=memory_format))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """The input scales ``[N, I]`` (float32; FP16 layers: normalised to max 1 per sample, as officially)."""
        s = self.affine(w)
        if self.fp16:
            s = s / s.abs().amax(dim=1, keepdim=True)
        return s

    def scale(self, s: torch.Tensor) -> torch.Tensor:
        """Demodulation times the activation gain, ``[N, O]``."""
        return LRELU_GAIN * (s.square() @ self.wsq + 1e-8).rsqrt()


class _ToRGB(nn.Module):
    """ToRGB as a batched matrix product of NHWC pixels with per-sample ``[N, C, 3]`` weights (no modulation
    pass), plus bias and clamp; float32 out."""

    PAD = 8  # output columns of the product: 3 is too narrow for an aligned tensor-core GEMM (measured)

    def __init__(self, layer: ToRGBLayer, dtype: torch.dtype):
        super().__init__()
        self.dtype, self.clamp = dtype, layer.conv_clamp
        self.affine = _Affine(layer.affine, layer.weight_gain)
        weight = layer.weight.detach().float().clone()[:, :, 0, 0].t()  # [C, 3]
        self.register_buffer("weight", torch.cat([weight, weight.new_zeros(weight.shape[0], self.PAD - 3)], 1))
        self.register_buffer("bias", layer.bias.detach().float().clone())

    def forward(self, x: torch.Tensor, w: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """``x [N, C, H, W]`` -> ``[N, 3, H, W]`` before bias and clamp (``rgb_out``), in ``x``'s dtype."""
        n, c, h, wd = x.shape
        wm = (self.weight[None] * self.affine(w)[:, :, None]).to(x.dtype)  # [N, C, 8], columns 3.. are zero
        if channels_last:
            y = torch.bmm(x.permute(0, 2, 3, 1).reshape(n, h * wd, c), wm)  # [N, HW, 8]
            return y.reshape(n, h, wd, self.PAD)[..., :3].permute(0, 3, 1, 2)
        return torch.bmm(wm[:, :, :3].transpose(1, 2), x.reshape(n, c, h * wd)).reshape(n, 3, h, wd)


class CudaSynthesis(nn.Module):
    """``ws [N, num_ws, w_dim]`` (or ``w [N, w_dim]``) -> images ``[N, C, H, W]`` float32, constant noise.

    ``fp16_blocks``: ``"official"`` (the network's ``num_fp16_res`` blocks), ``"all"`` or ``"none"`` (float32
    throughout: what ``make test`` compares with the reference on the CPU). ``channels_last``: NHWC memory (the
    default on CUDA). ``epilogue``: ``"eager"`` or ``"compile"`` (``torch.compile`` of ``epilogue``)."""

    def __init__(self, synthesis: SynthesisNetwork, *, fp16_blocks: str = "official",
                 channels_last: bool = True, epilogue: str = "eager"):
        super().__init__()
        if fp16_blocks not in FP16_BLOCKS:
            raise ConfigError(f"fp16_blocks must be one of {FP16_BLOCKS}, got {fp16_blocks!r}")
        if epilogue not in EPILOGUES:
            raise ConfigError(f"epilogue must be one of {EPILOGUES}, got {epilogue!r}")
        check_plannable(synthesis)
        if synthesis.img_channels != 3:
            raise ConfigError(f"the CUDA plan renders RGB; this network has {synthesis.img_channels} channels")
        self.fp16_blocks, self.channels_last, self.epilogue_mode = fp16_blocks, channels_last, epilogue
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.num_ws, self.w_dim = synthesis.num_ws, synthesis.w_dim
        self.img_resolution = synthesis.img_resolution
        self.skip = synthesis.b4.skip_image
        self.blocks = nn.ModuleList()
        self.dtypes: list[torch.dtype] = []
        for block in synthesis.blocks():
            fp16 = fp16_blocks == "all" or (fp16_blocks == "official" and block.use_fp16)
            dtype = torch.float16 if fp16 else torch.float32
            mods = nn.ModuleDict()
            for name in ("conv0", "conv1"):
                if hasattr(block, name):
                    mods[name] = _Layer(getattr(block, name), dtype, fmt)
            if block.has_torgb:
                mods["torgb"] = _ToRGB(block.torgb, dtype)
            self.blocks.append(mods)
            self.dtypes.append(dtype)
        self.register_buffer("const", synthesis.b4.const.detach().float().clone()[None])
        self._post_conv, self._post_conv_up, self._modulate, self._rgb_out = kernels(epilogue)
        self.eval().requires_grad_(False)

    @property
    def description(self) -> str:
        return (f"cuda plan (fp16 blocks: {self.fp16_blocks}, {'channels-last' if self.channels_last else 'NCHW'}, "
                f"folded upsampling, {self.epilogue_mode} epilogue)")

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        # Always in inference mode: a compiled function recompiles for tensors with and without autograd keys.
        with torch.inference_mode():
            return self._forward(ws)

    def _forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            assert_shape("w", ws, [None, self.w_dim])
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        assert_shape("ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.float()
        n = ws.shape[0]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        # Every layer's styles first: an up layer's epilogue applies the next layer's input scales.
        convs, idx = [], 0
        for mods in self.blocks:
            for name in ("conv0", "conv1"):
                if name in mods:
                    layer = mods[name]
                    s = layer.styles(ws[:, idx])
                    convs.append((layer, s, layer.scale(s)))
                    idx += 1
        x = img = None
        at, w_idx = 0, 0
        for mods, dtype in zip(self.blocks, self.dtypes):
            names = [nm for nm in ("conv0", "conv1") if nm in mods]
            first = x is None  # the 4x4 block: tiny, and its input (the constant) is not an activation, so it
            if first:          # runs the functions themselves, never their compiled forms (no extra variants)
                x = self.const.expand(n, -1, -1, -1)
            pre_scaled = False
            for k, name in enumerate(names):
                layer, s, scale = convs[at]
                if not pre_scaled:
                    x = (modulate if first else self._modulate)(x, s, dtype, self.channels_last)
                z = F.conv2d(x, layer.weight, padding=1)
                # An up layer feeds only the next convolution: its epilogue applies that convolution's input
                # scales. conv1's output also feeds ToRGB and the next block, so it stays unscaled.
                if layer.up == 2 and k + 1 < len(names):
                    x = self._post_conv_up(z, scale.to(dtype), layer.shift, layer.clamp, convs[at + 1][1].to(dtype),
                                           self.channels_last)
                    pre_scaled = True
                else:
                    if layer.up == 2:
                        z = interleave_phases(z, self.channels_last)
                    x = (post_conv if first else self._post_conv)(z, scale.to(dtype), layer.shift, layer.clamp)
                    pre_scaled = False
                at += 1
            w_idx += len(names)
            if "torgb" in mods:
                torgb = mods["torgb"]
                y = torgb(x, ws[:, w_idx], self.channels_last)
                img = (rgb_out if img is None else self._rgb_out)(y, torgb.bias, torgb.clamp, img)
            elif img is not None:
                img = image_up2(img)
        return img


def kernels(mode: str):
    """``(post_conv, post_conv_up, modulate, rgb_out)``: the PyTorch functions themselves (``"eager"``), or
    ``torch.compile`` of each (``"compile"``: dynamic shapes, so one kernel per layer kind whatever the batch and
    resolution; the functions stay their reference)."""
    fns = (post_conv, post_conv_up, modulate, rgb_out)
    if mode == "compile":
        return tuple(torch.compile(f, dynamic=True, fullgraph=True) for f in fns)
    return fns


def plannable_reason(synthesis: SynthesisNetwork) -> str | None:
    """Why the CUDA plan cannot be built for this network, or None when it can."""
    try:
        check_plannable(synthesis)
    except ConfigError as exc:
        return str(exc)
    if synthesis.img_channels != 3:
        return f"{synthesis.img_channels} image channels (the plan renders RGB)"
    return None
