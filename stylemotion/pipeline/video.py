"""What the video job reports (``VideoResult``), the random-walk baseline of the evaluation, and its chart.

The jobs themselves render through the runtime (``runtime/jobs.py``): one rendering path for every frame.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models.stylegan2 import Generator
from .interpolate import Schedule


@dataclass
class VideoResult:
    path: Path | None
    frames: int
    render_seconds: float
    acd: float  # pixel ACD (see metrics.py)
    latent_acceleration: float
    sheet: Path | None = None

    @property
    def render_fps(self) -> float:
        return self.frames / self.render_seconds if self.render_seconds else float("inf")


def random_walk_schedule(G: Generator, n_keys: int, segments, *, seed: int, truncation_psi: float,
                         mode: str = "linear") -> Schedule:
    """The baseline: keyframes are independent random faces (not emotion edits of one identity)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn([n_keys, G.z_dim], generator=rng).to(G.mapping.w_avg.device)
    with torch.no_grad():
        keys = G.mapping(z, truncation_psi=truncation_psi)
    return Schedule(keys, segments, mode)


def bar_chart(path: str | os.PathLike, labels: Sequence[str], values: Sequence[float], errors: Sequence[float],
              title: str) -> Path:
    """A small PNG bar chart (mean +/- std) drawn with Pillow."""
    from PIL import Image, ImageDraw

    from ..imaging import save_png

    width, height, margin = 120 * len(labels) + 80, 320, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    top = max(v + e for v, e in zip(values, errors)) or 1.0
    scale = (height - 2 * margin - 20) / top
    draw.text((margin, 8), title, fill="black")
    base = height - margin
    draw.line([(margin - 5, base), (width - 10, base)], fill="black")
    for i, (label, v, e) in enumerate(zip(labels, values, errors)):
        x0 = margin + 20 + 120 * i
        draw.rectangle([x0, base - v * scale, x0 + 60, base], fill=(70, 110, 180))
        draw.line([(x0 + 30, base - (v + e) * scale), (x0 + 30, base - max(v - e, 0) * scale)], fill="black", width=2)
        draw.text((x0, base + 6), label, fill="black")
        draw.text((x0, base - (v + e) * scale - 14), f"{v:.4f}", fill="black")
    return save_png(path, np.asarray(img))
