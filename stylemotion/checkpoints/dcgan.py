"""Read the DCGAN teacher (``gan_face_generate``'s ``weights.tar``: a torch zip of ``{"netG_state_dict": ...}``).

Read with ``torch.load(weights_only=True)`` (no code runs), then every key and shape is checked against
``models.dcgan.DCGANGenerator`` before anything is copied.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingDependencyError
from ..models.dcgan import DCGANGenerator

TEACHER_PACKAGE = "gan_face_generate==1.1.1"


def default_teacher_path() -> Path:
    """``gan_face_generate/weights.tar`` of the installed package, found without importing it (its modules
    import torchvision and matplotlib, which we do not need)."""
    spec = importlib.util.find_spec("gan_face_generate")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "weights.tar"
        if path.is_file():
            return path
    raise MissingDependencyError("the DCGAN teacher's weights come from the gan_face_generate package: "
                                 f"pip install --no-deps {TEACHER_PACKAGE}")


def load_dcgan(path: str | os.PathLike | None = None) -> DCGANGenerator:
    where = str(path if path is not None else default_teacher_path())
    if not Path(where).is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        data = torch.load(where, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{where}: not a readable torch weights file ({type(exc).__name__}: {exc})") from exc
    state = data.get("netG_state_dict") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a dict with key 'netG_state_dict' (the DCGAN generator), got "
                              f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    model = DCGANGenerator()
    expected = model.expected_shapes()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where}: netG_state_dict does not match the DCGAN generator (missing {missing}, "
                              f"unexpected {extra})")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{where}: netG_state_dict[{key!r}] has shape {got}, expected {shape}")
        if not torch.isfinite(value.float()).all():
            raise CheckpointError(f"{where}: netG_state_dict[{key!r}] holds NaN or infinite values")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
