"""One frozen description per exported network: names, dtypes, symbolic dims, sample inputs, batch profile.

The exporter, the verifier (and later the TensorRT builder and the runtime's buffer allocation) all read the
spec; nothing about a network's I/O is repeated elsewhere.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or a str naming a symbolic (dynamic) dimension, e.g. ("batch", 14, 512)
    dtype: str = "float32"  # also "int64" for emotion ids


@dataclass(frozen=True)
class BatchProfile:
    """min / opt / max of the dynamic batch axis (a TensorRT optimization profile, and the tested sizes)."""

    min: int = 1
    opt: int = 8
    max: int = 32


@dataclass(frozen=True)
class ExportSpec:
    name: str  # file stem: synthesis, mapping, vgg16, lstm_seq, lstm_step, emotion_cnn
    module: nn.Module = field(repr=False, compare=False)  # a wrapper whose forward takes the inputs in order
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample: Callable[[int], tuple[torch.Tensor, ...]] = field(repr=False, compare=False)  # batch -> inputs
    profile: BatchProfile = BatchProfile()
    description: str = ""
    # FP16 graphs are checked by PSNR (dB) against this float32 module, which takes the same inputs in float32.
    reference: nn.Module | None = field(default=None, repr=False, compare=False)
    min_psnr: float | None = None

    def dynamic_shapes(self) -> tuple:
        """torch.export dynamic shapes, one entry per input in order (so wrappers may take ``*inputs``): one
        shared Dim per symbolic name, with the profile's range for "batch"."""
        dims: dict[str, torch.export.Dim] = {}
        out = []
        for spec in self.inputs:
            axes = {}
            for i, d in enumerate(spec.shape):
                if isinstance(d, str):
                    if d not in dims:
                        lo, hi = (self.profile.min, self.profile.max) if d == "batch" else (1, 4096)
                        dims[d] = torch.export.Dim(d, min=lo, max=hi)
                    axes[i] = dims[d]
            out.append(axes or None)
        return tuple(out)


@contextlib.contextmanager
def eval_mode(spec: ExportSpec) -> Iterator[None]:
    """The spec's module (and reference) in eval mode while exporting or verifying, every training flag put back
    afterwards: a spec wraps the caller's network and must not change it."""
    modules = [m for root in (spec.module, spec.reference) if root is not None for m in root.modules()]
    flags = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.training = False
        yield
    finally:
        for m, training in flags:
            m.training = training
