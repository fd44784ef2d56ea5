"""The Engine protocol. An engine renders a batch of latents; it knows nothing about emotions or streams.

``run(ws)``: ``ws [B, num_ws, w_dim]`` float32 (W inputs ``[B, w_dim]`` are broadcast) -> images
``[B, 3, H, W]`` float in about [-1, 1], on the engine's device. The returned tensor may be a buffer that the
next ``run`` call reuses (CUDA-graph engines do this): copy it if you need it later.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..shapes import assert_shape


@dataclass(frozen=True)
class EngineInfo:
    backend: str  # "torch", "onnxruntime", "tensorrt"
    precision: str  # "fp32", "fp16"
    device: str  # "cpu", "cuda:0"
    min_batch: int
    max_batch: int
    resolution: int
    num_ws: int
    w_dim: int
    detail: str = ""  # providers, CUDA graphs, why this backend was chosen


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo

    def run(self, ws: torch.Tensor) -> torch.Tensor: ...


def check_ws(ws: torch.Tensor, info: EngineInfo) -> torch.Tensor:
    """Broadcast W to W+, check the shape and the batch range; float32, contiguous."""
    if ws.ndim == 2:
        assert_shape("w", ws, [None, info.w_dim])
        ws = ws[:, None].expand(-1, info.num_ws, -1)
    assert_shape("ws", ws, [None, info.num_ws, info.w_dim])
    if not info.min_batch <= ws.shape[0] <= info.max_batch:
        from ..errors import ShapeError

        raise ShapeError(f"ws batch {ws.shape[0]} is outside this engine's range "
                         f"{info.min_batch}..{info.max_batch} ({info.backend})")
    return ws.to(torch.float32).contiguous()
