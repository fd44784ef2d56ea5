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
    check_state_dict(model, state, where, name="netG_state_dict")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def check_state_dict(model: torch.nn.Module, state: dict, where: str, *, name: str = "") -> None:
    """Every key of ``model`` present in ``state``, nothing else, each a finite tensor of the model's shape; a
    CheckpointError naming ``where``, the dict (``name``) and the key otherwise. Nothing is copied here."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    label = f"{name} " if name else ""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where}: {label}does not match {type(model).__name__} (missing {missing}, "
                              f"unexpected {extra})")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{where}: {name}[{key!r}] has shape {got}, expected {shape}" if name else
                                  f"{where}: {key!r} has shape {got}, expected {shape}")
        if not torch.isfinite(value.float()).all():
            raise CheckpointError(f"{where}: {name or 'tensor'}[{key!r}] holds NaN or infinite values")
