"""Shape checks at tensor boundaries: one helper that names the tensor, the dimension and both sizes."""
from __future__ import annotations

from typing import Sequence

from .errors import ShapeError


def assert_shape(name: str, tensor, expected: Sequence[int | None]) -> None:
    """Raise ShapeError unless ``tensor.shape`` matches ``expected`` (``None`` matches any size).

    >>> assert_shape("ws", ws, [None, G.num_ws, G.w_dim])
    """
    shape = tuple(tensor.shape)
    if len(shape) != len(expected):
        raise ShapeError(f"{name} must have {len(expected)} dimensions {_fmt(expected)}, got shape {list(shape)}")
    for dim, (got, want) in enumerate(zip(shape, expected)):
        if want is not None and got != want:
            raise ShapeError(f"{name} dimension {dim} must be {want}, got {got} (shape {list(shape)}, expected {_fmt(expected)})")


def _fmt(expected: Sequence[int | None]) -> str:
    return "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
