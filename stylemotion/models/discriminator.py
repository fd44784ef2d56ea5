"""A small convolutional discriminator for the adversarial part of distillation (64x64 RGB -> one logit).

StyleGAN2's residual discriminator, shrunk: equalised-learning-rate convs (weights ~ N(0, 1) scaled at run time),
leaky ReLU with gain sqrt(2), average-pool downsampling, a residual 1x1 skip per block, and a linear head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2)


class _Conv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, *, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain, self.pad = 1 / math.sqrt(cin * k * k), k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0, self.conv1 = _Conv(cin, cin, 3), _Conv(cin, cout, 3)
        self.skip = _Conv(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.skip(x), 2)
        x = F.leaky_relu(self.conv0(x), 0.2) * LRELU_GAIN
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.2) * LRELU_GAIN, 2)
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """``images [N, 3, res, res] -> logits [N]``; channels double per halving up to ``channel_max``."""

    def __init__(self, resolution: int = 64, channels: int = 32, channel_max: int = 256, img_channels: int = 3):
        super().__init__()
        self.from_rgb = _Conv(img_channels, channels, 1)
        blocks, res, c = [], resolution, channels
        while res > 4:
            blocks.append(_Block(c, min(c * 2, channel_max)))
            c, res = min(c * 2, channel_max), res // 2
        self.blocks = nn.Sequential(*blocks)
        self.conv = _Conv(c, c, 3)
        self.fc = nn.Linear(c * 16, c)
        self.out = nn.Linear(c, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(img), 0.2) * LRELU_GAIN
        x = self.blocks(x)
        x = F.leaky_relu(self.conv(x), 0.2) * LRELU_GAIN
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2) * LRELU_GAIN
        return self.out(x).squeeze(1)
