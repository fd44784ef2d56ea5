"""Latents for ``stylemotion generate``: from seeds (as the official ``gen_images.py``) or an ``.npz``; the
images are rendered through the runtime (``runtime.jobs.render_images``)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .npzfile import read_npz
from .errors import ConfigError, InputError
from .models.stylegan2 import Generator, z_from_seed
from .shapes import assert_shape


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7,10-11"`` -> ``[0, 1, 2, 3, 7, 10, 11]`` (ranges inclusive, order kept, seeds in 0..2**32-1)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"seeds: cannot parse {part!r} in {text!r} (use e.g. 0-7 or 1,5,9-12)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"seeds: range {part!r} ends before it starts")
        if hi >= 2 ** 32:
            raise ConfigError(f"seeds: {hi} is out of range (0..{2 ** 32 - 1})")
        seeds.extend(range(lo, hi + 1))
    return seeds


def ws_from_seeds(G: Generator, seeds: list[int], *, truncation_psi: float = 1.0,
                  truncation_cutoff: int | None = None) -> torch.Tensor:
    """``ws [len(seeds), num_ws, w_dim]`` from the official per-seed z (``RandomState(seed).randn``)."""
    if G.c_dim:
        raise ConfigError(f"this generator is conditional (c_dim={G.c_dim}); rendering from seeds needs a class")
    device = G.mapping.w_avg.device
    z = torch.cat([z_from_seed(s, G.z_dim) for s in seeds]).to(device)
    with torch.no_grad():
        return G.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


def load_ws(path: str | os.PathLike, G: Generator) -> torch.Tensor:
    """Latents from an ``.npz`` with key ``ws`` (``[N, num_ws, w_dim]``, or ``[N, w_dim]`` broadcast)."""
    where = str(path)
    data = read_npz(where, what="latents")
    if "ws" not in data:
        raise InputError(f"{where}: no key 'ws' (keys: {sorted(data)})")
    ws = data["ws"]
    if not np.issubdtype(ws.dtype, np.floating):
        raise InputError(f"{where}: key 'ws' has dtype {ws.dtype}, expected floating point")
    t = torch.from_numpy(ws.astype(np.float32))
    if t.ndim == 2:
        assert_shape(f"{where}: ws", t, [None, G.w_dim])
        t = t.unsqueeze(1).repeat(1, G.num_ws, 1)
    assert_shape(f"{where}: ws", t, [None, G.num_ws, G.w_dim])
    if t.shape[0] == 0:
        raise InputError(f"{where}: key 'ws' holds no latents")
    if not torch.isfinite(t).all():
        raise InputError(f"{where}: key 'ws' holds NaN or infinite values")
    return t


def per_image_paths(grid_path: str | os.PathLike, labels: list[str]) -> list[Path]:
    """``grid.png`` + ``["seed0005"]`` -> ``grid-seed0005.png`` beside it."""
    p = Path(grid_path)
    return [p.with_name(f"{p.stem}-{label}{p.suffix or '.png'}") for label in labels]
