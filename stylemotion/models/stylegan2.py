"""StyleGAN2 generator with the semantics of NVlabs' official code (stylegan2-ada-pytorch / stylegan3 "StyleGAN2").

Parameter and buffer names follow the official state dict (``mapping.fc0.weight``, ``synthesis.b4.const``,
``synthesis.b8.conv0.noise_const``, ...), so official weights load without renaming. Differences from the
official module, each on purpose:

* ``noise_mode`` defaults to ``'const'`` (deterministic frames; video must not flicker). ``'random'`` and
  ``'none'`` behave as in the official code.
* FP16 blocks (``num_fp16_res``) run in FP16 only on CUDA; on the CPU everything runs in the parameters' dtype
  (float32, or float64 after ``.double()``), where the official code would fail.
* ``w_avg`` is never updated by ``forward`` (this is an inference package; there is no training mode EMA).
* Modulated convolutions can be forced to the batch-independent form (``fused_modconv=False``), which is the
  form exported to ONNX; both forms agree to float32 rounding.
* ``synthesis`` accepts ``w [N, w_dim]`` (broadcast to every layer) as well as ``ws [N, num_ws, w_dim]``.

Architectures ``'skip'`` (config-f) and ``'orig'`` are supported; ``'resnet'`` generators are refused.

Channel counts follow the official ``min(channel_base // res, channel_max)`` unless the config carries an explicit
per-resolution table (``channels_per_res``), as rosinality's generator does (``channel_multiplier=4`` gives 1024
channels at 64x64 after 512 at 32x32, which no ``channel_base``/``channel_max`` pair can express).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..shapes import assert_shape
from .stylegan2_ops import (LRELU_GAIN, bias_act, modulated_conv2d, normalize_2nd_moment, setup_filter,
                            upsample2d)

NOISE_MODES = ("const", "random", "none")
ARCHITECTURES = ("skip", "orig")
PRECISIONS = ("auto", "fp32", "fp16")


MAX_PARAMETERS = 1_000_000_000  # about 4 GB of float32 weights; the official 1024x1024 generator has 30 million


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that determines the generator's architecture (the official Generator kwargs, flattened)."""

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    mapping_layer_features: int | None = None  # None: w_dim
    mapping_embed_features: int | None = None  # None: w_dim when c_dim > 0
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    architecture: str = "skip"
    # Explicit channel table ``((4, c4), (8, c8), ..., (img_resolution, c))``; None: the official formula.
    # A mapping ``{res: channels}`` (keys may be strings, as JSON writes them) is accepted and stored as sorted
    # pairs, so the config stays hashable. When set, channel_base and channel_max are not used.
    channels_per_res: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels_per_res", _channel_pairs(self.channels_per_res))

    def validate(self) -> "GeneratorConfig":
        res = self.img_resolution
        if not isinstance(res, int) or res < 4 or res > 1024 or res & (res - 1):
            raise ConfigError(f"img_resolution must be a power of two in 4..1024, got {res!r}")
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers", "channel_base", "channel_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("c_dim", "num_fp16_res"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("mapping_layer_features", "mapping_embed_features"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if self.conv_clamp is not None and not isinstance(self.conv_clamp, (int, float)):
            raise ConfigError(f"conv_clamp must be a number or None, got {self.conv_clamp!r}")
        if not isinstance(self.mapping_lr_multiplier, (int, float)):
            raise ConfigError(f"mapping_lr_multiplier must be a number, got {self.mapping_lr_multiplier!r}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r} "
                              "('resnet' generators are not supported)")
        if self.c_dim < 0 or self.num_fp16_res < 0:
            raise ConfigError(f"c_dim and num_fp16_res must be >= 0, got {self.c_dim!r}, {self.num_fp16_res!r}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ConfigError(f"conv_clamp must be positive or None, got {self.conv_clamp!r}")
        if not self.mapping_lr_multiplier > 0:
            raise ConfigError(f"mapping_lr_multiplier must be positive, got {self.mapping_lr_multiplier!r}")
        # A file's config could ask for any size: bound it before anything is allocated (make fuzz found
        # mapping_layers = 2**40, which kept the constructor busy until the alarm).
        limits = {"z_dim": 8192, "w_dim": 8192, "img_channels": 16, "mapping_layers": 64, "c_dim": 65536,
                  "num_fp16_res": 16}
        for name, limit in limits.items():
            if getattr(self, name) > limit:
                raise ConfigError(f"{name} must be at most {limit}, got {getattr(self, name)}")
        for name in ("mapping_layer_features", "mapping_embed_features"):
            if (getattr(self, name) or 0) > 8192:
                raise ConfigError(f"{name} must be at most 8192, got {getattr(self, name)}")
        if self.channels_per_res is not None:
            self._validate_channel_table()
        elif self.channel_base < self.img_resolution:  # the last block would get no channel at all
            raise ConfigError(f"channel_base must be at least img_resolution ({self.img_resolution}) so that "
                              f"every block has a channel, got {self.channel_base!r}")
        params = self.parameter_estimate()
        if params > MAX_PARAMETERS:
            raise ConfigError(f"this config asks for about {params / 1e9:.1f} billion parameters (at most "
                              f"{MAX_PARAMETERS / 1e9:g} billion are built)")
        return self

    def parameter_estimate(self) -> int:
        """The network's size from the config alone (convolutions, affines, mapping layers), before anything is
        allocated: within a few percent of the real count."""
        feats = self.mapping_layer_features or self.w_dim
        embed = (self.mapping_embed_features or self.w_dim) if self.c_dim else 0
        total = (self.z_dim + embed) * feats + max(self.mapping_layers - 1, 0) * feats * feats + feats * self.w_dim
        total += self.c_dim * embed
        cin = 0
        for res in self.block_resolutions:
            cout = self.channels(res)
            convs = [(cout, cout)] if res == 4 else [(cin, cout), (cout, cout)]
            total += sum(a * b * 9 + self.w_dim * a for a, b in convs) + cout * self.img_channels + self.w_dim * cout
            cin = cout
        return int(total)

    def _validate_channel_table(self) -> None:
        table = self.channels_per_res
        if not isinstance(table, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in table):
            raise ConfigError(f"channels_per_res must map each resolution to a channel count, got {table!r}")
        keys = [r for r, _ in table]
        expected = self.block_resolutions
        bad = [r for r in keys if not _is_int(r)]
        if bad:
            raise ConfigError(f"channels_per_res keys must be resolutions (integers), got {bad!r}")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"channels_per_res names a resolution twice: {keys!r}")
        missing = [r for r in expected if r not in keys]
        extra = [r for r in keys if r not in expected]
        if missing or extra:
            detail = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                                 f"unexpected {extra}" if extra else "") if part)
            raise ConfigError(f"channels_per_res must give every resolution {expected} (img_resolution="
                              f"{self.img_resolution}) exactly once ({detail}), got {dict(table)!r}")
        for res, ch in table:
            if not _is_int(ch) or ch < 1:
                raise ConfigError(f"channels_per_res[{res}] must be a positive integer, got {ch!r}")

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``: the explicit table when set, else the official
        ``min(channel_base // res, channel_max)``."""
        if self.channels_per_res is not None:
            return dict(self.channels_per_res)[res]
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        return 2 * len(self.block_resolutions)  # 1 conv at 4x4, 2 per later block, + the last ToRGB

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON. The channel table, when set, is ``{res: channels}`` (JSON turns the keys into
        strings; ``from_dict`` turns them back); without one the key is left out, so such files stay as before."""
        data = dataclasses.asdict(self)
        data.pop("channels_per_res")
        if self.channels_per_res is not None:
            data["channels_per_res"] = dict(self.channels_per_res)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown generator config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data)).validate()

    def to_init_kwargs(self) -> dict[str, Any]:
        """The official stylegan2-ada-pytorch ``Generator(**init_kwargs)`` form.

        A channel table is added as ``synthesis_kwargs["channels_per_res"]`` beside the official names. That key is
        a stylemotion extension: ``from_init_kwargs`` reads it, the official code cannot build such a network."""
        mapping: dict[str, Any] = {"num_layers": self.mapping_layers, "lr_multiplier": self.mapping_lr_multiplier}
        if self.mapping_layer_features is not None:
            mapping["layer_features"] = self.mapping_layer_features
        if self.mapping_embed_features is not None:
            mapping["embed_features"] = self.mapping_embed_features
        synthesis: dict[str, Any] = {"channel_base": self.channel_base, "channel_max": self.channel_max,
                                     "num_fp16_res": self.num_fp16_res, "conv_clamp": self.conv_clamp,
                                     "architecture": self.architecture}
        if self.channels_per_res is not None:
            synthesis["channels_per_res"] = dict(self.channels_per_res)
        return {"z_dim": self.z_dim, "c_dim": self.c_dim, "w_dim": self.w_dim,
                "img_resolution": self.img_resolution, "img_channels": self.img_channels,
                "mapping_kwargs": mapping, "synthesis_kwargs": synthesis}

    @classmethod
    def from_init_kwargs(cls, kwargs: Mapping[str, Any]) -> "GeneratorConfig":
        """From official Generator kwargs: stylegan2-ada-pytorch (``synthesis_kwargs={...}``) or stylegan3's
        StyleGAN2 (synthesis kwargs at top level). Settings that change the maths and that this module does not
        implement are refused; settings that only affect training or memory layout are ignored."""
        kwargs = dict(kwargs)
        mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
        synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
        top = {k: kwargs.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k in kwargs}
        if kwargs and not synthesis:
            # The stylegan3 repository's StyleGAN2 puts synthesis kwargs at top level, and its defaults differ
            # from stylegan2-ada-pytorch's: FP16 in the 4 highest resolutions, activations clamped at 256.
            synthesis = {"num_fp16_res": 4, "conv_clamp": 256}
        synthesis.update(kwargs)
        missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in top]
        if missing:
            raise ConfigError(f"generator kwargs lack {missing}")
        ignored = {"fused_modconv_default", "channels_last", "fp16_channels_last", "w_avg_beta", "num_ws",
                   "magnitude_ema_beta"}
        required = {"activation": "lrelu", "kernel_size": 3, "use_noise": True, "resample_filter": [1, 3, 3, 1]}
        for section, values in (("mapping_kwargs", mapping), ("synthesis_kwargs", synthesis)):
            for key in list(values):
                if key in ignored:
                    values.pop(key)
                elif key in required:
                    if _plain(values.pop(key)) != required[key]:
                        raise ConfigError(f"{section}.{key} other than {required[key]!r} is not supported")
        try:
            cfg = {"z_dim": int(top["z_dim"]), "w_dim": int(top["w_dim"]), "c_dim": int(top.get("c_dim", 0)),
                   "img_resolution": int(top["img_resolution"]), "img_channels": int(top.get("img_channels", 3))}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"generator kwargs hold a non-integer size: {top}") from exc
        renames_m = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier",
                     "layer_features": "mapping_layer_features", "embed_features": "mapping_embed_features"}
        for key, value in mapping.items():
            if key not in renames_m:
                raise ConfigError(f"mapping_kwargs.{key} is not supported (value {value!r})")
            cfg[renames_m[key]] = value
        for key, value in synthesis.items():
            if key not in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                           "channels_per_res"):
                raise ConfigError(f"synthesis_kwargs.{key} is not supported (value {value!r})")
            cfg[key] = value
        return cls(**cfg).validate()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _channel_pairs(table: Any) -> Any:
    """A channel table as sorted ``(res, channels)`` pairs: from a mapping (string keys of digits, as JSON
    writes them, become ints) or a sequence of pairs. Anything else comes back as is for ``validate`` to name."""
    if table is None:
        return None
    if isinstance(table, Mapping):
        items = list(table.items())
    elif isinstance(table, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in table):
        items = [tuple(p) for p in table]
    else:
        return table
    pairs = tuple((int(r) if isinstance(r, str) and r.isdecimal() else r, c) for r, c in items)
    if all(_is_int(r) for r, _ in pairs):
        pairs = tuple(sorted(pairs, key=lambda p: p[0]))
    return pairs


class FullyConnectedLayer(nn.Module):
    """Equalized-learning-rate linear layer: ``act(x @ (W * lr/sqrt(in)).T + b * lr)``."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, gain=LRELU_GAIN)


class MappingNetwork(nn.Module):
    """``z [N, z_dim] (+ c [N, c_dim]) -> ws [N, num_ws, w_dim]`` with truncation toward ``w_avg``."""

    def __init__(self, cfg: GeneratorConfig, num_ws: int):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, num_ws
        self.num_layers = cfg.mapping_layers
        layer_features = cfg.w_dim if cfg.mapping_layer_features is None else cfg.mapping_layer_features
        embed_features = cfg.w_dim if cfg.mapping_embed_features is None else cfg.mapping_embed_features
        if cfg.c_dim == 0:
            embed_features = 0
        features = [cfg.z_dim + embed_features] + [layer_features] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        if cfg.c_dim > 0:
            self.embed = FullyConnectedLayer(cfg.c_dim, embed_features)
        for idx in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        assert_shape("z", z, [None, self.z_dim])
        dtype = self.w_avg.dtype
        x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            if c is None:
                raise ConfigError(f"this generator is conditional (c_dim={self.c_dim}): pass c [N, {self.c_dim}]")
            assert_shape("c", c, [z.shape[0], self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            head = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
            x = torch.cat([head, x[:, cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, lrelu*sqrt(2), optional clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str, fused: bool,
                noise_input: torch.Tensor | None = None) -> torch.Tensor:
        """``noise_input``: an explicit noise map (``[N, 1, res, res]`` or ``[res, res]``, before the layer's
        ``noise_strength``) that replaces whatever ``noise_mode`` would use."""
        styles = self.affine(w)
        noise = None
        if noise_input is not None:
            noise = noise_input * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=self.noise_const.dtype) * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1,
                             resample_filter=self.resample_filter, fused=fused)
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation, styles scaled by ``1/sqrt(in_channels)``, plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> ToRGB, adding to the upsampled running image."""

    def __init__(self, in_channels: int, out_channels: int, *, cfg: GeneratorConfig, resolution: int,
                 is_last: bool, use_fp16: bool):
        super().__init__()
        self.in_channels, self.resolution, self.is_last, self.use_fp16 = in_channels, resolution, is_last, use_fp16
        self.has_torgb = is_last or cfg.architecture == "skip"
        self.skip_image = cfg.architecture == "skip"
        clamp = cfg.conv_clamp
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, cfg.w_dim, resolution, up=2, conv_clamp=clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, cfg.w_dim, resolution, conv_clamp=clamp)
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_channels, cfg.img_channels, cfg.w_dim, conv_clamp=clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if self.has_torgb else 0

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *, dtype: torch.dtype,
                noise_mode: str, fused_modconv: bool | None, noise: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ws [N, num_conv + num_torgb, w_dim]``; returns features ``[N, C, res, res]`` and the image."""
        noise = noise or {}
        n = ws.shape[0]
        fused = fused_modconv if fused_modconv is not None else (dtype != torch.float16 or n == 1)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(n, -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode, fused=fused, noise_input=noise.get("conv1"))
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode=noise_mode, fused=fused, noise_input=noise.get("conv0"))
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode, fused=fused, noise_input=noise.get("conv1"))
        if img is not None:
            img = upsample2d(img, self.resample_filter.to(img.dtype))
        if self.has_torgb:
            y = self.torgb(x, ws[:, self.num_conv], fused=fused).to(ws.dtype)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """``ws [N, num_ws, w_dim] -> images [N, img_channels, H, W]`` (float, about [-1, 1] for trained weights)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = cfg.w_dim, cfg.img_resolution, cfg.img_channels
        self.block_resolutions = cfg.block_resolutions
        fp16_resolution = max(2 ** (int(math.log2(cfg.img_resolution)) + 1 - cfg.num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = cfg.channels(res // 2) if res > 4 else 0
            is_last = res == cfg.img_resolution
            block = SynthesisBlock(in_channels, cfg.channels(res), cfg=cfg, resolution=res, is_last=is_last,
                                   use_fp16=cfg.num_fp16_res > 0 and res >= fp16_resolution)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def noise_layers(self) -> dict[str, int]:
        """Layer name -> resolution of every noise input, in forward order (``b4.conv1``, ``b8.conv0``, ...)."""
        out = {}
        for block in self.blocks():
            for name in ("conv0", "conv1"):
                if hasattr(block, name):
                    out[f"b{block.resolution}.{name}"] = block.resolution
        return out

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", *, precision: str = "auto",
                force_fp32: bool = False, fused_modconv: bool | None = None,
                noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``precision``: ``'auto'`` runs the ``num_fp16_res`` highest resolutions in FP16 on CUDA and everything
        else in the parameters' dtype; ``'fp32'`` (or the official ``force_fp32=True``) never uses FP16;
        ``'fp16'`` uses FP16 in those blocks on any device (the CPU too, to check FP16 numerics there).
        ``noise``: explicit noise maps by layer (``{"b8.conv0": [N, 1, 8, 8], ...}``, see ``noise_layers``)
        that replace ``noise_mode`` for those layers."""
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if ws.ndim == 2:
            assert_shape("w", ws, [None, self.w_dim])
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        assert_shape("ws", ws, [None, self.num_ws, self.w_dim])
        base = self.b4.const.dtype
        ws = ws.to(base)
        allow_fp16 = not force_fp32 and (precision == "fp16" or (precision == "auto" and ws.device.type == "cuda"))
        x = img = None
        w_idx = 0
        for block in self.blocks():
            dtype = torch.float16 if block.use_fp16 and allow_fp16 else base
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            block_noise = {k.split(".", 1)[1]: v for k, v in (noise or {}).items() if k.startswith(f"b{block.resolution}.")}
            x, img = block(x, img, block_ws, dtype=dtype, noise_mode=noise_mode, fused_modconv=fused_modconv,
                           noise=block_noise)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """The StyleGAN2 generator: ``G.mapping(z) -> ws``, ``G.synthesis(ws) -> images``, ``G(z) -> images``."""

    def __init__(self, config: GeneratorConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = dataclasses.replace(config or GeneratorConfig(), **overrides).validate()
        self.config = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)
        self.eval().requires_grad_(False)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return self.config.to_init_kwargs()

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const", **synthesis_kwargs: Any) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_image(self) -> int:
        """Floating-point operations (2 x multiply-adds) of one forward pass, z to image, counted analytically:
        fully connected layers, convolutions, FIR filters, modulation and demodulation."""
        macs = 0
        for idx in range(self.mapping.num_layers):
            macs += getattr(self.mapping, f"fc{idx}").weight.numel()
        for block in self.synthesis.blocks():
            res = block.resolution
            layers = [block.conv1] + ([block.conv0] if block.in_channels else [])
            for layer in layers:
                o, i, k, _ = layer.weight.shape
                in_res = res // layer.up
                macs += layer.affine.weight.numel() + 2 * o * i * k * k  # styles; modulate + demodulate
                macs += o * i * k * k * in_res * in_res  # the convolution (transposed for up=2)
                if layer.up == 2:
                    macs += o * 16 * res * res  # 4x4 FIR on the output
            if block.has_torgb:
                o, i, _, _ = block.torgb.weight.shape
                macs += block.torgb.affine.weight.numel() + o * i + o * i * res * res
                if res > 4 and block.skip_image:
                    macs += o * 16 * res * res
        return 2 * macs


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The official ``gen_images.py`` latent for a seed: ``np.random.RandomState(seed).randn(1, z_dim)``."""
    import numpy as np

    return torch.from_numpy(np.random.RandomState(int(seed)).randn(1, z_dim)).float()


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` float in about [-1, 1] -> ``[N, H, W, C]`` uint8 (the official ``* 127.5 + 128`` rule)."""
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
