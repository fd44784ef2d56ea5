"""The DCGAN generator of the PyTorch tutorial (the teacher of the bundled ``digiface-64`` model).

``z [N, 100] -> images [N, 3, 64, 64]`` in [-1, 1]: five transposed 4x4 convolutions (the first maps the 1x1
latent to 4x4, each later one doubles the resolution), batch norm and ReLU between them, tanh at the end. The
layer indices of ``main`` match the tutorial's ``nn.Sequential`` so its state dict loads key for key.
"""
from __future__ import annotations

import torch
from torch import nn

from ..shapes import assert_shape


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 100, features: int = 64, img_channels: int = 3):
        super().__init__()
        self.z_dim, self.features, self.img_channels = z_dim, features, img_channels
        chans = [z_dim, features * 8, features * 4, features * 2, features]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(features, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.eval().requires_grad_(False)

    @property
    def img_resolution(self) -> int:
        return 64

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert_shape("z", z, [None, self.z_dim])
        return self.main(z[:, :, None, None])
