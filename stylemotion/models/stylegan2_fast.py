"""A CPU inference plan of a StyleGAN2 synthesis network: the same function, with the arithmetic rearranged.

``FastSynthesis(G.synthesis)`` computes what ``G.synthesis(ws, noise_mode="const", precision="fp32")`` computes
(to float32 rounding: the conformance tests hold it to the official outputs like the reference network), but it
is built for speed where the weights are constants, as in an exported graph or a CPU engine:

* **Batch-independent modulation** (the exported form): activations are scaled by the styles, convolved with the
  constant weight, scaled by the demodulation coefficients. A runtime can pre-pack constant weights; per-sample
  weights it cannot.
* **Winograd F(4x4, 3x3)** for the 3x3 convolutions whose channel counts are at least ``winograd_min_channels``:
  36 multiplies per 16 outputs instead of 144 (a 4x smaller matrix product), with the weight transform done
  once here, in float64. The input and output transforms are small matrix products of their own.
* **Upsampling convolution as one matrix product**: the stride-2 transposed 3x3 convolution becomes a 1x1
  convolution to ``9 * out_channels`` channels (pre-packed, the fastest kernel every runtime has) followed by the
  column-to-image sums of its four phases, written with pads and adds. Same multiply count as the transposed
  convolution, none of its scatter.
* **Folded constants**: noise (``noise_const * noise_strength``) and bias are one constant tensor per layer, and the
  ``sqrt(2)`` activation gain is folded into it and into the demodulation scale (``lrelu(g * x) = g * lrelu(x)``
  for ``g > 0``), so each layer's epilogue is a multiply, an add, the activation and the optional clamp.
* **FIR by box filters**: the ``[1, 3, 3, 1]`` filter is three 2x2 box filters in a row (``avg_pool2d``), each a
  cheap pass that every runtime vectorises, in place of a 16-tap depthwise convolution.

Only constant noise is planned (the noise exported graphs bake in); the plan holds its own copies of the weights
(taken when it is built), so later changes to ``G`` do not reach it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..shapes import assert_shape
from .stylegan2 import LRELU_GAIN, SynthesisLayer, SynthesisNetwork, ToRGBLayer
from .stylegan2_ops import LRELU_ALPHA, upfirdn2d

# Winograd F(4x4, 3x3) (Lavin & Gray 2016), interpolation points 0, +-1, +-2 and infinity.
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))

# Measured on 2 CPU cores (config-f 256, PyTorch eager): with cpp_ext's one-pass transforms Winograd wins from 128
# channels up, with PyTorch's own (five or six passes each) from 256; below 32x32 a layer reads 4x the weight
# bytes for a handful of tiles and the direct convolution is faster.
DEFAULT_WINOGRAD_MIN_CHANNELS = 256
KERNEL_WINOGRAD_MIN_CHANNELS = 128
DEFAULT_WINOGRAD_MIN_RESOLUTION = 32
# Per target: eager PyTorch runs oneDNN's transposed convolution and depthwise FIR fastest; graph runtimes
# (ONNX Runtime, OpenVINO) run the GEMM upsampling and the box-filter FIR fastest (bench/results).
TARGETS = {"eager": dict(upsample="transpose", fir="conv"), "graph": dict(upsample="gemm", fir="box")}


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[O, I, 3, 3]`` correlation weights -> ``[36, 1, O, I]`` transformed weights (``G w G^T``, computed in
    float64), ordered column-point major to match ``winograd_conv3x3``'s input transform."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ak,oikl,bl->baoi", g, weight.double(), g)  # [b, a, O, I]
    return u.reshape(36, 1, *weight.shape[:2]).float().contiguous()


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bt: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """3x3 correlation with padding 1 by Winograd F(4x4, 3x3): ``x [N, I, H, W]`` (H, W multiples of 4),
    ``u`` from ``winograd_weight``, ``bt``/``at`` the float32 transform matrices -> ``[N, O, H, W]``."""
    n, c, h, w = x.shape
    p, q = h // 4, w // 4
    xp = F.pad(x, [1, 1, 1, 1])  # tiles of 6 rows/columns every 4: 4p + 2 = h + 2
    rows = torch.stack([xp[:, :, i:i + 4 * p:4] for i in range(6)])  # [6, N, C, P, W+2]
    rows = torch.matmul(bt, rows.reshape(6, -1)).reshape(6, n, c, p, w + 2)  # row transform
    cols = torch.stack([rows[..., j:j + 4 * q:4] for j in range(6)])  # [6 (col), 6 (row point), N, C, P, Q]
    v = torch.matmul(bt, cols.reshape(6, -1)).reshape(36, n, c, p * q)  # column transform
    m = torch.matmul(u, v)  # [36, N, O, P*Q]: the 36 independent matrix products
    o = m.shape[2]
    y = torch.matmul(at, m.reshape(6, -1)).reshape(4, 6, -1)  # inverse over the column points
    y = torch.matmul(at, y.transpose(0, 1).reshape(6, -1)).reshape(4, 4, n, o, p, q)  # over the row points
    return y.permute(2, 3, 4, 0, 5, 1).reshape(n, o, h, w)


def upsample_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[O, I, 3, 3]`` -> ``[9 * O, I, 1, 1]``: one 1x1 convolution computing every tap's contribution, ordered
    (kernel row, kernel column, output channel)."""
    o, i = weight.shape[:2]
    return weight.permute(2, 3, 0, 1).reshape(9 * o, i, 1, 1).contiguous()


def upsample_conv3x3(x: torch.Tensor, wc: torch.Tensor) -> torch.Tensor:
    """The official ``conv_transpose2d(x, W^T, stride=2)`` (size ``2H+1``) as a 1x1 convolution plus the
    column-to-image sums of its four output phases; returns ``[N, O, 2H+2, 2W+2]`` whose last row and column are
    zero: the transposed convolution's output followed by one row and column of the FIR's padding."""
    n, _, h, w = x.shape
    o = wc.shape[0] // 9
    taps = F.conv2d(x, wc).reshape(n, 3, 3, o, h, w)  # taps[:, kh, kw] = W[:, :, kh, kw] applied to x

    def phases(t0, t1, t2, dim_pad_after, dim_pad_before):  # even = t0[a] + t2[a-1], odd = t1[a]; length+1
        even = F.pad(t0, dim_pad_after) + F.pad(t2, dim_pad_before)
        return even, F.pad(t1, dim_pad_after)

    rows_even, rows_odd = [], []
    for kw in range(3):  # row phases for each kernel column: [N, O, H+1, W]
        e, od = phases(taps[:, 0, kw], taps[:, 1, kw], taps[:, 2, kw], [0, 0, 0, 1], [0, 0, 1, 0])
        rows_even.append(e)
        rows_odd.append(od)
    out = []
    for r in (rows_even, rows_odd):  # column phases: [N, O, H+1, W+1] each
        out.append(phases(r[0], r[1], r[2], [0, 1], [1, 0]))
    (ee, eo), (oe, oo) = out
    y = torch.stack([torch.stack([ee, eo], dim=-1), torch.stack([oe, oo], dim=-1)], dim=3)  # [N,O,H+1,2,W+1,2]
    return y.reshape(n, o, 2 * h + 2, 2 * w + 2)


def fir4x4(x: torch.Tensor, f: torch.Tensor, how: str) -> torch.Tensor:
    """The 4x4 FIR filter ``f`` (symmetric, unpadded, 'valid') with gain 4: a depthwise convolution (``"conv"``),
    or for the official ``[1, 3, 3, 1]`` filter three 2x2 box filters in a row (``"box"``)."""
    if how == "box":
        for _ in range(3):
            x = F.avg_pool2d(x, 2, stride=1)
        return x * 4.0
    c = x.shape[1]
    return F.conv2d(x, (f * 4.0)[None, None].expand(c, 1, 4, 4), groups=c)


class _Conv(nn.Module):
    """One planned SynthesisLayer."""

    def __init__(self, layer: SynthesisLayer, kind: str, fir: str = "conv", kernels: bool = False):
        super().__init__()
        self.kind, self.up, self.fir, self.kernels = kind, layer.up, fir, kernels
        self.register_buffer("f", layer.resample_filter.detach().float().clone())
        weight = layer.weight.detach().float().clone()
        self.affine = _Affine(layer.affine)
        self.register_buffer("wsq", weight.square().sum(dim=[2, 3]).t().contiguous())  # [I, O]
        gain = LRELU_GAIN
        const = layer.noise_const.detach().float() * layer.noise_strength.detach().float()
        self.register_buffer("shift", gain * (const[None] + layer.bias.detach().float()[:, None, None])[None])
        self.gain, self.clamp = gain, layer.conv_clamp
        if kind == "winograd":
            self.register_buffer("u", winograd_weight(weight))
            self.register_buffer("bt", torch.tensor(_BT, dtype=torch.float32))
            self.register_buffer("at", torch.tensor(_AT, dtype=torch.float32))
        elif kind == "upsample":
            self.register_buffer("wc", upsample_conv_weight(weight))
        elif kind == "transpose":
            self.register_buffer("weight_t", weight.transpose(0, 1).contiguous())
        else:
            self.register_buffer("weight", weight.contiguous())

    def epilogue(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``clamp(lrelu(scale * x + shift))``: one fused multiply-add, then the activation and the clamp in
        place (``x`` is the convolution's fresh output)."""
        x = torch.addcmul(self.shift, x, scale[:, :, None, None])
        x = F.leaky_relu_(x, LRELU_ALPHA)
        if self.clamp is not None:
            x = x.clamp_(-self.clamp, self.clamp)
        return x

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        scale = self.gain * (styles.square() @ self.wsq + 1e-8).rsqrt()  # gain * demodulation, [N, O]
        if self.kind == "winograd" and self.kernels and x.device.type == "cpu":
            # cpp_ext: modulation + input transform in one pass, the 36 GEMMs, output transform + epilogue.
            n, _, h, wd = x.shape
            v = torch.ops.stylemotion.winograd_input(x.contiguous(), styles.contiguous())
            m = torch.matmul(self.u, v)
            return torch.ops.stylemotion.winograd_output(m, scale.contiguous(), self.shift, h, wd, LRELU_ALPHA,
                                                         self.clamp)
        x = x * styles[:, :, None, None]
        if self.kind == "winograd":
            x = winograd_conv3x3(x, self.u, self.bt, self.at)
        elif self.kind == "upsample":
            x = fir4x4(F.pad(upsample_conv3x3(x, self.wc), [1, 0, 1, 0]), self.f, self.fir)
        elif self.kind == "transpose":
            x = fir4x4(F.pad(F.conv_transpose2d(x, self.weight_t, stride=2), [1, 1, 1, 1]), self.f, self.fir)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        return self.epilogue(x, scale)


class _Affine(nn.Module):
    """A FullyConnectedLayer's ``x @ (W * gain).T + b * bias_gain`` with the gains folded into the constants."""

    def __init__(self, fc: nn.Module, extra_gain: float = 1.0):
        super().__init__()
        self.register_buffer("weight_t", (fc.weight.detach().float() * fc.weight_gain * extra_gain).t().contiguous())
        self.register_buffer("bias", fc.bias.detach().float() * fc.bias_gain * extra_gain)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, w, self.weight_t)


class _ToRGB(nn.Module):
    """ToRGB with per-sample weights (``[N, 3, C]``, a few thousand multiplies) instead of scaling activations."""

    def __init__(self, layer: ToRGBLayer):
        super().__init__()
        self.affine = _Affine(layer.affine, layer.weight_gain)
        self.register_buffer("weight", layer.weight.detach().float().clone()[:, :, 0, 0].contiguous())  # [3, C]
        self.register_buffer("bias", layer.bias.detach().float().clone()[None, :, None, None])
        self.clamp = layer.conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        wm = self.weight[None] * self.affine(w)[:, None, :]  # [N, 3, C]
        y = torch.matmul(wm, x.reshape(n, c, h * wd)).reshape(n, -1, h, wd) + self.bias
        if self.clamp is not None:
            y = y.clamp(-self.clamp, self.clamp)
        return y


class FastSynthesis(nn.Module):
    """``ws [N, num_ws, w_dim]`` (or ``w [N, w_dim]``) -> images ``[N, C, H, W]``, float32, constant noise.

    ``target``: ``"eager"`` (PyTorch runs the plan) or ``"graph"`` (it is exported or converted for ONNX Runtime /
    OpenVINO); it picks ``upsample`` and ``fir`` unless they are given. ``winograd_min_channels`` /
    ``winograd_min_resolution``: 3x3 convolutions whose input and output channels and resolution are at least
    these use Winograd F(4x4, 3x3) (``winograd_min_channels=None``: never; ``"auto"``: 128 with cpp_ext's
    transforms, 256 without). ``kernels``: use cpp_ext's Winograd transforms (default: when the extension is
    built and the target is eager). ``upsample``: ``"gemm"`` (1x1
    convolution + phase sums) or ``"transpose"`` (the official transposed convolution). ``fir``: ``"conv"``
    (depthwise convolution) or ``"box"`` (three 2x2 box filters)."""

    def __init__(self, synthesis: SynthesisNetwork, *, target: str = "eager",
                 winograd_min_channels: int | None | str = "auto",
                 winograd_min_resolution: int = DEFAULT_WINOGRAD_MIN_RESOLUTION,
                 upsample: str | None = None, fir: str | None = None, kernels: bool | None = None):
        super().__init__()
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {list(TARGETS)}, got {target!r}")
        upsample = upsample or TARGETS[target]["upsample"]
        fir = fir or TARGETS[target]["fir"]
        if kernels is None:  # cpp_ext's Winograd transforms: eager only (an exported graph has no custom ops)
            from .. import extension

            kernels = target == "eager" and bool(extension.status()["cpu"])
        elif kernels and target != "eager":
            raise ConfigError("kernels=True needs target='eager' (exported graphs cannot call cpp_ext)")
        self.kernels = kernels
        if winograd_min_channels == "auto":
            winograd_min_channels = KERNEL_WINOGRAD_MIN_CHANNELS if kernels else DEFAULT_WINOGRAD_MIN_CHANNELS
        check_plannable(synthesis)
        if upsample not in ("gemm", "transpose"):
            raise ConfigError(f"upsample must be 'gemm' or 'transpose', got {upsample!r}")
        if fir not in ("conv", "box"):
            raise ConfigError(f"fir must be 'conv' or 'box', got {fir!r}")
        self.num_ws, self.w_dim = synthesis.num_ws, synthesis.w_dim
        self.img_resolution, self.img_channels = synthesis.img_resolution, synthesis.img_channels
        self.resolutions = list(synthesis.block_resolutions)
        self.register_buffer("const", synthesis.b4.const.detach().float().clone()[None])
        f = synthesis.b4.resample_filter.detach().float().clone()
        self.register_buffer("img_filter", f)
        self.plan: list[str] = []
        self.blocks = nn.ModuleList()
        self.upsample = upsample
        for block in synthesis.blocks():
            mods = nn.ModuleDict()
            for name in ("conv0", "conv1"):
                if hasattr(block, name):
                    layer = getattr(block, name)
                    mods[name] = self._plan_layer(layer, winograd_min_channels, winograd_min_resolution,
                                                  upsample, fir, kernels)
                    self.plan.append(f"b{block.resolution}.{name}: {mods[name].kind}")
            if block.has_torgb:
                mods["torgb"] = _ToRGB(block.torgb)
            self.blocks.append(mods)
        self.skip = synthesis.b4.skip_image
        self.eval().requires_grad_(False)

    @staticmethod
    def _plan_layer(layer: SynthesisLayer, min_channels: int | None, min_resolution: int, upsample: str,
                    fir: str, kernels: bool) -> nn.Module:
        o, i = layer.weight.shape[:2]
        if layer.up == 2:
            return _Conv(layer, "upsample" if upsample == "gemm" else "transpose", fir)
        if (min_channels is not None and min(o, i) >= min_channels and layer.resolution >= min_resolution
                and layer.resolution % 4 == 0):
            return _Conv(layer, "winograd", kernels=kernels)
        return _Conv(layer, "direct")

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            assert_shape("w", ws, [None, self.w_dim])
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        assert_shape("ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.float()
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        img = None
        idx = 0
        for mods in self.blocks:
            for name in ("conv0", "conv1"):
                if name in mods:
                    x = mods[name](x, ws[:, idx])
                    idx += 1
            if img is not None:
                img = fir_up2(img, self.img_filter)
            if "torgb" in mods:
                y = mods["torgb"](x, ws[:, idx])
                img = y if img is None else img + y
        return img


def fir_up2(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's 2x image upsampling of the skip path (3 channels: the reference op is cheap enough)."""
    return upfirdn2d(img, f, up=2, padding=(2, 1, 2, 1), gain=4.0)


def is_binomial_filter(f: torch.Tensor) -> bool:
    """The plan's box-filter FIR assumes the official ``[1, 3, 3, 1]`` filter."""
    ref = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    return f.shape == (4, 4) and torch.allclose(f.float().cpu(), ref / ref.sum())


def check_plannable(synthesis: SynthesisNetwork) -> None:
    """Refuse what the plan does not implement, naming it."""
    if not is_binomial_filter(synthesis.b4.resample_filter):
        raise ConfigError("FastSynthesis needs the official [1, 3, 3, 1] resample filter")
    if math.log2(synthesis.img_resolution) % 1:
        raise ConfigError(f"img_resolution {synthesis.img_resolution} is not a power of two")
