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
