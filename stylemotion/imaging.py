"""Pictures a person looks at: image grids and PNG files (written atomically)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import ConfigError, ShapeError


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """``frames [N, H, W, C] uint8`` enlarged ``factor`` times (Lanczos) for viewing; 1 returns them unchanged."""
    if not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"the upscale factor must be a positive integer, got {factor!r}")
    if factor == 1:
        return frames
    if frames.ndim != 4:
        raise ShapeError(f"frames must be [N, H, W, C], got shape {list(frames.shape)}")
    import cv2

    n, h, w, _ = frames.shape
    return np.stack([cv2.resize(f, (w * factor, h * factor), interpolation=cv2.INTER_LANCZOS4) for f in frames])


def make_grid(frames: np.ndarray, *, cols: int | None = None, pad: int = 2, fill: int = 0) -> np.ndarray:
    """Tile ``frames [N, H, W, C] uint8`` into one ``[rows*(H+pad)-pad, cols*(W+pad)-pad, C]`` image."""
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ShapeError(f"frames must be [N, H, W, C] with N >= 1, got shape {list(frames.shape)}")
    n, h, w, c = frames.shape
    if cols is not None and cols < 1:
        raise ConfigError(f"grid columns must be >= 1, got {cols}")
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), fill, dtype=frames.dtype)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = frames[i]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray, *, atomic: bool = True) -> Path:
    """Write ``image [H, W, 3|1] uint8`` as PNG under a temporary name, then rename it into place (``atomic=False``
    writes in place: for files inside a folder that is itself a temporary, published whole)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ShapeError(f"image must be [H, W, 3] or [H, W, 1] uint8, got shape {list(image.shape)} {image.dtype}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    if not atomic:
        pil.save(path, format="PNG")
        return Path(path)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)
