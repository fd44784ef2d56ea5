"""Latents files (DESIGN.md section 4): ``.npz`` with ``ws [N, num_ws, w_dim]``, ``frame_index [N]``,
``source [N]`` and ``loss [N]``, plus optional extras (``steps [N]``, ``space``, ``config``). No pickles."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from ..npzfile import read_npz

REQUIRED = ("ws", "frame_index", "source", "loss")


def write_latents(path: str | os.PathLike, *, ws: np.ndarray, frame_index: np.ndarray, source: np.ndarray,
                  loss: np.ndarray, **extra: np.ndarray) -> Path:
    """Write atomically (a temporary file renamed when complete); arrays must agree on N."""
    n = len(ws)
    for name, arr in (("frame_index", frame_index), ("source", source), ("loss", loss)):
        if len(arr) != n:
            raise InputError(f"latents: {name} has {len(arr)} entries but ws has {n}")
    arrays = {"ws": np.asarray(ws, np.float32), "frame_index": np.asarray(frame_index, np.int64),
              "source": np.asarray(source, dtype=str), "loss": np.asarray(loss, np.float32)}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def read_latents(path: str | os.PathLike) -> dict[str, np.ndarray]:
    where = str(path)
    out = read_npz(where, what="latents")
    missing = [k for k in REQUIRED if k not in out]
    if missing:
        raise InputError(f"{where}: missing keys {missing} (a latents file has {list(REQUIRED)})")
    ws = out["ws"]
    if ws.ndim != 3:
        raise InputError(f"{where}: key 'ws' must be [N, num_ws, w_dim], got shape {list(ws.shape)}")
    for key in ("frame_index", "source", "loss"):
        if out[key].shape != (ws.shape[0],):
            raise InputError(f"{where}: key {key!r} has shape {list(out[key].shape)}, expected [{ws.shape[0]}]")
    return out


def read_identity(spec: str, *, num_ws: int | None = None, w_dim: int | None = None) -> np.ndarray:
    """``FILE.npz[:INDEX]`` (a latents file from ``embed`` or ``animate``, row INDEX, default 0) -> ws
    ``[num_ws, w_dim]`` float32, checked against the generator's shape when given."""
    path, sep, index = str(spec).rpartition(":") if str(spec).rpartition(":")[2].isdigit() else (spec, "", "")
    ws = read_latents(path)["ws"]
    i = int(index) if sep else 0
    if not 0 <= i < len(ws):
        raise InputError(f"{spec}: no row {i} in {path} ({len(ws)} rows)")
    row = np.asarray(ws[i], np.float32)
    if (num_ws is not None and row.shape[0] != num_ws) or (w_dim is not None and row.shape[1] != w_dim):
        raise InputError(f"{spec}: ws rows are {list(row.shape)}, this generator needs [{num_ws}, {w_dim}]")
    if not np.isfinite(row).all():
        raise InputError(f"{spec}: row {i} holds NaN or infinite values")
    return row
