"""Keyframes: ``w_identity + coefficient * direction[emotion]`` in the space the direction was learned in."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ..models.stylegan2 import Generator


def apply_direction(G: Generator, z: torch.Tensor, direction: np.ndarray, space: str, coeffs: Sequence[float], *,
                    truncation_psi: float = 1.0) -> torch.Tensor:
    """``ws [len(coeffs), num_ws, w_dim]`` for identity ``z [1, z_dim]`` moved along ``direction``.

    ``space``: ``'z'`` (added to z, then mapped), ``'w'`` (added to every ws row) or ``'w+'`` (a
    ``[num_ws, w_dim]`` direction added row by row). In W and W+ truncation applies to the identity before the
    edit; in Z the edited z is mapped and truncated as a whole (truncation acts in W).
    """
    d = torch.as_tensor(np.asarray(direction, dtype=np.float32), device=z.device)
    expected = {"z": (G.z_dim,), "w": (G.w_dim,), "w+": (G.num_ws, G.w_dim)}
    if space not in expected:
        raise ConfigError(f"space must be z, w or w+, got {space!r}")
    if tuple(d.shape) != expected[space]:
        raise ShapeError(f"a {space!r} direction for this generator must have shape {list(expected[space])}, "
                         f"got {list(d.shape)}")
    c = torch.tensor(list(coeffs), dtype=torch.float32, device=z.device)
    with torch.no_grad():
        if space == "z":
            return G.mapping(z + c[:, None] * d, truncation_psi=truncation_psi)
        ws = G.mapping(z, truncation_psi=truncation_psi).expand(len(c), -1, -1)
        step = d[None, None, :] if space == "w" else d[None]
        return ws + c[:, None, None] * step
