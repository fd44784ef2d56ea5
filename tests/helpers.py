"""Helpers shared by tests: where the reference data lives, small seeded generators."""
from __future__ import annotations

from pathlib import Path

import torch

from stylemotion.checkpoints import random_generator
from stylemotion.models.stylegan2 import Generator, GeneratorConfig

DATA = Path(__file__).parent / "data"


def make_generator(seed: int = 0, **overrides) -> Generator:
    """A small seeded random generator (16x16, narrow) with non-zero noise strengths and biases."""
    cfg = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    cfg.update(overrides)
    G = random_generator(GeneratorConfig(**cfg), seed=seed)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "mapping" not in name):
                p.add_(0.3 * torch.randn(p.shape, generator=rng))
    return G


def make_image_generator(res: int = 16, seed: int = 5) -> Generator:
    """A small generator whose images stay in about [-1.5, 1] like a trained one (ToRGB weights scaled down)."""
    G = make_generator(img_resolution=res, channel_base=res * 32, channel_max=32, z_dim=32, w_dim=32, seed=seed)
    with torch.no_grad():
        for block in G.synthesis.blocks():
            block.torgb.weight.mul_(0.2)
    return G


def psnr(a: torch.Tensor, b: torch.Tensor, peak_to_peak: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (``[N, C, H, W]``)."""
    mse = (a.float() - b.float()).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(peak_to_peak ** 2 / mse.clamp_min(1e-20))
