"""Keyframes: ``w_identity + coefficient * direction[emotion]`` in the space the direction was learned in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ..models.emotion_cnn import EMOTIONS
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


@dataclass(frozen=True)
class ScriptItem:
    emotion: str | None  # None: the identity itself (a live stream going back to rest)
    seconds: float
    coefficient: float | None = None  # None: the video's default coefficient


def parse_script(text: str, *, directions=None) -> list[ScriptItem]:
    """``"happy:2,surprise:1.5:4,neutral:1"`` -> items (emotion names or ids, seconds, optional coefficient).
    With ``directions``, an emotion they lack is an error that lists the ones they hold."""
    from .directions import emotion_id

    items = []
    for part in (p.strip() for p in text.split(",")):
        fields = part.split(":")
        if len(fields) not in (2, 3) or not fields[0]:
            raise ConfigError(f"script item {part!r}: expected emotion:seconds[:coefficient]")
        try:
            seconds = float(fields[1])
            coeff = float(fields[2]) if len(fields) == 3 else None
        except ValueError as exc:
            raise ConfigError(f"script item {part!r}: seconds and coefficient must be numbers") from exc
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(f"script item {part!r}: duration must be positive seconds, got {fields[1]}")
        if coeff is not None and not math.isfinite(coeff):
            raise ConfigError(f"script item {part!r}: coefficient must be a finite number, got {fields[2]}")
        where = f"script item {part!r}"
        emotion = (EMOTIONS[emotion_id(fields[0], where=where)] if directions is None
                   else directions.emotion(fields[0], where=where))
        items.append(ScriptItem(emotion, seconds, coeff))
    return items


def check_directions(G: Generator, directions, emotions: Sequence[str]) -> None:
    """Before any rendering: every emotion has a direction, and the directions fit this generator."""
    expected = {"z": (G.z_dim,), "w": (G.w_dim,), "w+": (G.num_ws, G.w_dim)}
    shape = tuple(directions.directions.shape[1:])
    if directions.space not in expected or shape != expected[directions.space]:
        raise ShapeError(f"the directions are {directions.space!r} directions of shape {list(shape)}, but this "
                         f"generator needs {list(expected.get(directions.space, ('?',)))}: directions of another model?")
    missing = sorted(set(emotions) - set(directions.emotions))
    if missing:
        raise ConfigError(f"no direction for {missing}; the directions file has {directions.emotions}")


def keyframe_targets(identity: torch.Tensor, directions, items: Sequence[ScriptItem]) -> torch.Tensor:
    """``identity + coefficient * direction[emotion]`` per item, ``[len(items), *S]``, in the directions' space:
    ``identity`` is z ``[1, z_dim]`` (Z) or ws ``[1, num_ws, w_dim]`` (W, W+). Coefficients must be resolved; an
    item whose emotion is None is the identity itself."""
    space = directions.space
    shape = identity.shape[2:] if space == "w" else identity.shape[1:]
    d = torch.stack([torch.zeros(shape) if i.emotion is None else
                     torch.as_tensor(np.asarray(directions[i.emotion], np.float32)) for i in items])
    d = d.to(identity.device)
    c = torch.tensor([i.coefficient for i in items], dtype=torch.float32, device=identity.device)
    if space == "z":
        return identity + c[:, None] * d
    step = d[:, None, :] if space == "w" else d
    return identity + c[:, None, None] * step


def make_keyframes(G: Generator, z: torch.Tensor, directions, items: Sequence[ScriptItem], *,
                   coefficient: float = 3.0, truncation_psi: float = 0.7) -> torch.Tensor:
    """Keyframes ``[len(items) + 1, ...]``: the identity first, then ``identity + c * direction[emotion]``.

    In Z the keyframes are z vectors (mapped per frame, with truncation); in W and W+ they are
    ``[num_ws, w_dim]`` latents of the truncated identity plus the edit.
    """
    check_directions(G, directions, [i.emotion for i in items])
    coeffs = [coefficient if i.coefficient is None else i.coefficient for i in items]
    if not all(math.isfinite(c) for c in coeffs):
        raise ConfigError(f"coefficients must be finite numbers, got {coeffs}")
    resolved = [ScriptItem(i.emotion, i.seconds, c) for i, c in zip(items, coeffs)]
    if directions.space == "z":
        identity = z
    else:
        with torch.no_grad():
            identity = G.mapping(z, truncation_psi=truncation_psi)  # [1, num_ws, w_dim]
    return torch.cat([identity, keyframe_targets(identity, directions, resolved)])


def ws_from_keyframe_latents(G: Generator, latents: torch.Tensor, space: str, truncation_psi: float) -> torch.Tensor:
    """Interpolated keyframe latents -> ws ``[B, num_ws, w_dim]`` (Z latents go through the mapping)."""
    if space != "z":
        return latents
    with torch.no_grad():
        return G.mapping(latents, truncation_psi=truncation_psi)
