"""Read MTCNN's weights from the facenet-pytorch package (``facenet_pytorch/data/{pnet,rnet,onet}.pt``).

Only the weights are taken: the package itself pins old torch and numpy and needs torchvision, so it is installed
with ``--no-deps`` and never imported; its files are found through ``importlib.util.find_spec``. Each file is read
with ``torch.load(weights_only=True)`` (no code runs) and every key and shape is checked before copying.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, MissingDependencyError
from .dcgan import check_state_dict
from ..models.mtcnn import ONet, PNet, RNet

MTCNN_PACKAGE = "facenet-pytorch==2.6.0"


def default_mtcnn_dir() -> Path:
    """``facenet_pytorch/data`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "data"
        if all((folder / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet")):
            return folder
    raise MissingDependencyError("face alignment uses MTCNN's weights from the facenet-pytorch package: "
                                 f"pip install --no-deps {MTCNN_PACKAGE}")


def _load_into(model: nn.Module, path: Path) -> nn.Module:
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        state = torch.load(where, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{where}: not a readable torch weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a state dict, got {type(state).__name__}")
    check_state_dict(model, state, where)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False)


def load_mtcnn(folder: str | os.PathLike | None = None) -> tuple[PNet, RNet, ONet]:
    folder = Path(folder) if folder is not None else default_mtcnn_dir()
    return (_load_into(PNet(), folder / "pnet.pt"), _load_into(RNet(), folder / "rnet.pt"),
            _load_into(ONet(), folder / "onet.pt"))
