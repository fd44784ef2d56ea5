"""VGG16 feature extractor (torchvision's key layout) and the perceptual distances built on it.

Keys follow torchvision's ``vgg16`` (``features.0.weight`` ... ``features.28.bias``) so ImageNet weights load
unchanged. Two perceptual distances:

* ``"image2stylegan"``: mean squared feature differences at conv1_1, conv1_2, conv3_2 and conv4_2 (after
  ReLU), inputs normalised with ImageNet's mean and std (Abdal et al., Image2StyleGAN).
* ``"lpips"``: LPIPS-style, as the official StyleGAN2 projector measures it: relu1_2, relu2_2, relu3_3, relu4_3,
  relu5_3, each unit-normalised over channels, squared differences weighted per channel (LPIPS' linear weights
  when given, else 1), averaged over space and summed over layers; inputs use LPIPS' scaling layer.

Both take images ``[N, 3, H, W]`` in about [-1, 1]; images above 256 pixels are area-downsampled to 256 first, as
the official projector does. Alphabet: images ``[N, 3, H, W]``; features ``{layer: [N, C, h, w]}``; distances ``[N]``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

# torchvision's VGG16 configuration: channel counts, "M" = 2x2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
          "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def _conv_indices() -> list[int]:
    idx, out = 0, []
    for item in VGG16_CFG:
        if item == "M":
            idx += 1
        else:
            out.append(idx)
            idx += 2  # conv, relu
    return out


CONV_INDEX = dict(zip(_NAMES, _conv_indices()))  # conv1_1 -> 0, conv1_2 -> 2, ..., conv5_3 -> 28
IMAGE2STYLEGAN_LAYERS = ("conv1_1", "conv1_2", "conv3_2", "conv4_2")
LPIPS_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
PERCEPTUAL_KINDS = ("lpips", "image2stylegan")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGG16(nn.Module):
    """The 13 conv layers of VGG16 in torchvision's ``features`` layout; returns post-ReLU activations by name."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = item
        self.features = nn.Sequential(*layers)
        self.random_weights = True
        self.source = "random"
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        unknown = [name for name in layers if name not in CONV_INDEX]
        if unknown:
            raise ConfigError(f"unknown VGG16 layers {unknown}; known: {list(CONV_INDEX)}")
        wanted = {CONV_INDEX[name] + 1: name for name in layers}  # the ReLU after each conv
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        for idx, module in enumerate(self.features):
            x = module(x)
            if idx in wanted:
                out[wanted[idx]] = x
            if idx == last:
                break
        return out


class PerceptualDistance(nn.Module):
    """Per-image perceptual distance on a frozen VGG16: ``distance(features(a), b) -> [N]``."""

    def __init__(self, vgg: VGG16, kind: str = "lpips", lpips_weights: Sequence[torch.Tensor] | None = None):
        super().__init__()
        if kind not in PERCEPTUAL_KINDS:
            raise ConfigError(f"perceptual kind must be one of {PERCEPTUAL_KINDS}, got {kind!r}")
        self.vgg, self.kind = vgg, kind
        self.layers = LPIPS_LAYERS if kind == "lpips" else IMAGE2STYLEGAN_LAYERS
        if kind == "lpips":
            shift, scale = _LPIPS_SHIFT, _LPIPS_SCALE
        else:  # [-1, 1] -> [0, 1] -> ImageNet normalisation, folded into one affine map
            shift = tuple(2 * m - 1 for m in _IMAGENET_MEAN)
            scale = tuple(2 * s for s in _IMAGENET_STD)
        self.register_buffer("shift", torch.tensor(shift).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(scale).reshape(1, 3, 1, 1))
        weights = list(lpips_weights) if lpips_weights is not None else [torch.ones(c) for c in LPIPS_CHANNELS]
        if len(weights) != len(LPIPS_CHANNELS) or any(w.numel() != c for w, c in zip(weights, LPIPS_CHANNELS)):
            raise ConfigError(f"lpips_weights must be 5 tensors of {LPIPS_CHANNELS} elements, got "
                              f"{[tuple(w.shape) for w in weights]}")
        for i, w in enumerate(weights):
            self.register_buffer(f"lin{i}", w.detach().float().reshape(1, -1, 1, 1).clone())
        self.requires_grad_(False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] > 256 or images.shape[-2] > 256:
            images = F.interpolate(images, size=(256, 256), mode="area")
        x = (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        feats = self.vgg(x, self.layers)
        if self.kind == "lpips":
            feats = {k: v / (v.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for k, v in feats.items()}
        return feats

    def distance(self, target: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Distance ``[N]`` between precomputed target features (batch N or 1) and ``images [N, 3, H, W]``."""
        feats = self.features(images)
        total = images.new_zeros(images.shape[0])
        for i, name in enumerate(self.layers):
            diff = (feats[name] - target[name]).square()
            if self.kind == "lpips":
                total = total + (diff * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
            else:
                total = total + diff.mean(dim=(1, 2, 3))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(a), b)


def random_vgg16(seed: int = 0) -> VGG16:
    """VGG16 with seeded He-normal weights (torchvision's init), marked ``random_weights``; global RNG untouched."""
    with torch.device("meta"):
        vgg = VGG16()
    vgg.to_empty(device="cpu")
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in vgg.features:
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * 9
                module.weight.copy_(torch.randn(module.weight.shape, generator=rng) * (2.0 / fan_out) ** 0.5)
                module.bias.zero_()
    return vgg
