"""The Engine protocol. An engine renders a batch of latents; it knows nothing about emotions or streams.

``run(ws)``: ``ws [B, num_ws, w_dim]`` float32 (W inputs ``[B, w_dim]`` are broadcast) -> images
``[B, 3, H, W]`` float in about [-1, 1], on the engine's device. The returned tensor may be a buffer that the
next ``run`` call reuses (CUDA-graph engines do this): copy it if you need it later.

Every engine takes its input and output names and sizes from the synthesis network's ``ExportSpec``
(``export.networks.synthesis_spec``), never from literals, and never moves or changes the module it was given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..errors import ConfigError, ShapeError
from ..export.spec import ExportSpec, TensorSpec
from ..shapes import assert_shape


@dataclass(frozen=True)
class EngineInfo:
    backend: str  # "torch", "onnxruntime", "openvino", "tensorrt"
    precision: str  # "fp32", "fp16", "bf16"
    device: str  # "cpu", "cuda:0"
    min_batch: int
    max_batch: int
    resolution: int
    num_ws: int
    w_dim: int
    detail: str = ""  # why this engine (auto: the figures it chose by), providers, plan, CUDA graphs


def synthesis_io(spec: ExportSpec) -> tuple[TensorSpec, TensorSpec]:
    """The one input (``ws [batch, num_ws, w_dim]``) and the one output (``images [batch, C, H, W]``) of a
    synthesis spec, both float32 (engines run float32 I/O; FP16 lives inside them)."""
    if len(spec.inputs) != 1 or len(spec.outputs) != 1:
        raise ConfigError(f"an engine renders one input to one output; spec {spec.name!r} has inputs "
                          f"{[t.name for t in spec.inputs]} and outputs {[t.name for t in spec.outputs]}")
    (ws,), (images,) = spec.inputs, spec.outputs
    if (len(ws.shape) != 3 or len(images.shape) != 4 or ws.shape[0] != "batch" or images.shape[0] != "batch"
            or not all(isinstance(d, int) for d in ws.shape[1:] + images.shape[1:])):
        raise ConfigError(f"spec {spec.name!r}: expected {ws.name} [batch, num_ws, w_dim] -> {images.name} "
                          f"[batch, C, H, W] with fixed sizes, got {list(ws.shape)} -> {list(images.shape)}")
    for t in (ws, images):
        if t.dtype != "float32":
            raise ConfigError(f"spec {spec.name!r}: engines take and return float32, {t.name} is {t.dtype}")
    return ws, images


def describe(t: TensorSpec) -> str:
    """``ws [batch, 6, 16]``: a tensor as error messages name it."""
    return f"{t.name} [{', '.join(str(d) for d in t.shape)}]"


def info_from_spec(spec: ExportSpec, *, backend: str, precision: str, device: str, min_batch: int, max_batch: int,
                   detail: str = "") -> EngineInfo:
    """EngineInfo whose sizes (num_ws, w_dim, resolution) are read from the spec."""
    ws, images = synthesis_io(spec)
    return EngineInfo(backend, precision, device, min_batch, max_batch, images.shape[3], ws.shape[1], ws.shape[2],
                      detail)


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
        raise ShapeError(f"ws batch {ws.shape[0]} is outside this engine's range "
                         f"{info.min_batch}..{info.max_batch} ({info.backend})")
    return ws.to(torch.float32).contiguous()
