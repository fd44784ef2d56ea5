"""The rows to time: the models (checkpoints, built-in names, ``tiny-32``) and, for a device, every engine
configuration, each buildable or with the reason it cannot run here.

Each model's first row is the baseline (float32 eager PyTorch in the official grouped form). The ``auto`` row is
what ``open_engine(backend="auto")`` picks at each batch size (measured once and kept in the engine cache, or
taken from it), timed beside the rows it chose among: it should be the fastest row or within a few per cent.
"""
from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .machine import has_native_bf16

__all__ = ["BACKENDS", "PRECISIONS", "TINY_MODEL", "TINY_OVERRIDES", "PerBatch", "Row", "auto_choice",
           "export_official_graph", "load_model", "rows_for", "synthesis_flops"]

TINY_MODEL = "tiny-32"
TINY_OVERRIDES = dict(img_resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=32)
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")


def load_model(name: str, device: str = "cpu"):
    """A checkpoint, a built-in name, or ``tiny-32`` (ffhq-256's config shrunk to 32x32, seeded random weights:
    a dry-run model whose figures measure nothing)."""
    from ..checkpoints import load_generator

    if name == TINY_MODEL:
        return load_generator("ffhq-256", config=TINY_OVERRIDES, device=device)
    return load_generator(name, device=device)


def synthesis_flops(G) -> int:
    """FLOPs (2 x multiply-adds) of one image's synthesis, counted on the direct (non-Winograd) convolutions."""
    mapping = sum(2 * getattr(G.mapping, f"fc{i}").weight.numel() for i in range(G.mapping.num_layers))
    return G.flops_per_image() - mapping


@dataclass
class Row:
    """One engine configuration: a row of the table (per batch size)."""

    name: str
    backend: str
    precision: str  # "auto" rows: the precision of the engine chosen (``EngineInfo.precision``)
    build: Callable[[], object] | None  # -> engine, or a PerBatch; None when unavailable
    reason: str | None = None  # why it is not available
    baseline: bool = False


class PerBatch:
    """Builds an engine per batch size on first use (the official graph's batch is fixed; ``auto`` chooses per
    batch size)."""

    def __init__(self, make: Callable[[int], object]):
        self.make, self.engines, self.info = make, {}, None

    def for_batch(self, batch: int):
        if batch not in self.engines:
            self.engines[batch] = self.make(batch)
        self.info = self.engines[batch].info
        return self.engines[batch]


def auto_choice(detail: str) -> str | None:
    """The engine an ``auto`` engine's detail says was chosen (``"auto: torch-fast 331 ms < ..."``)."""
    if not detail.startswith("auto: "):
        return None
    return detail[len("auto: "):].split(" ", 1)[0].rstrip(",;")


def export_official_graph(G, batch: int, folder: Path) -> Path:
    """The official form exported as a user would export NVlabs' generator: dynamo, opset 18, fixed batch (its
    grouped convolution has one group per sample, which a dynamic batch cannot express)."""
    path = folder / f"official-b{batch}.onnx"
    from ..export.networks import OfficialSynthesis

    module = OfficialSynthesis(copy.deepcopy(G).cpu().float().eval())
    ws = torch.zeros(batch, G.num_ws, G.w_dim)
    with torch.no_grad():
        torch.onnx.export(module, (ws,), str(path), dynamo=True, opset_version=18, input_names=["ws"],
                          output_names=["images"], verbose=False)
    return path


def rows_for(G, device: str, backends, precisions, workdir: Path, threads: int | None, quick: bool = False,
             cache_dir: Path | None = None) -> list[Row]:
    """Every engine row for this device, each buildable or with the reason it is not. ``quick`` leaves out ONNX
    Runtime on the CPU plan's graph (its export is the longest build, and it is not a headline row).
    ``cache_dir``: the engine cache the ``auto`` row reads and writes (default: the user's)."""
    from ..engines.cache import EngineCache
    from ..engines.factory import _ort_providers, open_engine, openvino_engine
    from ..engines.ort_engine import OrtEngine
    from ..engines.ov_engine import OpenVinoEngine
    from ..engines.torch_engine import TorchEngine
    from ..export.networks import synthesis_cpu_spec, synthesis_spec
    from ..export.onnx_export import export_onnx

    ort_missing = ("onnxruntime is not installed (pip install 'stylemotion[onnx]')"
                   if importlib.util.find_spec("onnxruntime") is None else None)
    if ort_missing is None and importlib.util.find_spec("onnxscript") is None:
        ort_missing = "onnxscript is not installed (the ONNX exporter needs it: pip install 'stylemotion[onnx]')"
    ov_missing = ("openvino is not installed (pip install 'stylemotion[openvino]')"
                  if importlib.util.find_spec("openvino") is None else None)
    out: list[Row] = []
    cuda = device.startswith("cuda")

    def exported(spec_fn):
        def build():
            spec = spec_fn(G)
            return export_onnx(spec, workdir / spec.name, batches=[1, 2] if not quick else [1])
        return build

    def auto(batch: int):
        cache = EngineCache(cache_dir) if cache_dir is not None else None
        return open_engine(G, device=device, batch=batch, max_batch=max(64, batch), threads=threads, cache=cache)

    if not cuda:
        out.append(Row("torch eager, official form (baseline)", "torch", "fp32",
                       lambda: TorchEngine(G, device="cpu", plan="reference", detail="baseline"), baseline=True))
        out.append(Row("auto", "auto", "fp32", lambda: PerBatch(auto)))
        out.append(Row("torch eager, fast CPU plan", "torch", "fp32",
                       lambda: open_engine(G, backend="torch", device="cpu", plan="fast")))
        graphs = [("reference graph", synthesis_spec)]
        if not quick:
            graphs.append(("fast CPU plan graph", synthesis_cpu_spec))
        for graph, spec_fn in graphs:
            make = exported(spec_fn)
            out.append(Row(f"onnxruntime, {graph}", "onnxruntime", "fp32",
                           None if ort_missing else (lambda make=make: OrtEngine(
                               make(), synthesis_spec(G), provider="cpu", threads=threads)),
                           reason=ort_missing))
        ov_reason = ov_missing or ort_missing
        out.append(Row("openvino, official graph", "openvino", "fp32",
                       None if ov_reason else (lambda: PerBatch(lambda b: OpenVinoEngine(
                           export_official_graph(G, b, workdir), synthesis_spec(G), threads=threads,
                           max_batch=b))),
                       reason=ov_reason))
        out.append(Row("openvino, fast CPU plan", "openvino", "fp32",
                       None if ov_missing else (lambda: open_engine(G, backend="openvino", threads=threads)),
                       reason=ov_missing))
        bf16 = ov_missing or (None if has_native_bf16() else
                              "this CPU has no native bf16 (avx512_bf16 or amx_bf16); OpenVINO would emulate it")
        for graph, label in (("fast", "fast CPU plan graph"), ("reference", "reference graph")):
            out.append(Row(f"openvino bf16, {label}", "openvino", "bf16",
                           None if bf16 else (lambda graph=graph: openvino_engine(
                               G, None, precision="bf16", threads=threads, graph=graph)),
                           reason=bf16))
        out.append(Row("onnxruntime fp16", "onnxruntime", "fp16", None,
                       reason="ONNX Runtime's CPU provider has no fp16 convolutions"))
        out.append(Row("torch fp16", "torch", "fp16", None, reason="fp16 needs CUDA; this is the CPU"))
    else:
        out.append(Row("torch cuda, official form (baseline)", "torch", "fp32",
                       lambda: open_engine(G, backend="torch", device=device, precision="fp32", cuda_graphs=False),
                       baseline=True))
        out.append(Row("auto", "auto", "fp16", lambda: PerBatch(auto)))
        out.append(Row("torch cuda fp16", "torch", "fp16",
                       lambda: open_engine(G, backend="torch", device=device, precision="fp16", cuda_graphs=False)))
        out.append(Row("torch cuda fp16 + CUDA graphs", "torch", "fp16",
                       lambda: open_engine(G, backend="torch", device=device, precision="fp16", cuda_graphs=True)))
        gpu_ort = ort_missing or (None if "CUDAExecutionProvider" in _ort_providers() else
                                  "this onnxruntime has no CUDAExecutionProvider (pip install 'stylemotion[gpu]')")
        make = exported(synthesis_spec)
        out.append(Row("onnxruntime cuda, reference graph", "onnxruntime", "fp32",
                       None if gpu_ort else (lambda: open_engine(G, backend="onnxruntime", device=device,
                                                                 onnx_path=make())), reason=gpu_ort))
        out.append(Row("openvino", "openvino", "fp32", None, reason="OpenVINO runs on the CPU; this is a GPU run"))
    trt = ("the tensorrt package is not installed (pip install 'stylemotion[tensorrt]')"
           if importlib.util.find_spec("tensorrt") is None else "no CUDA device" if not cuda else ort_missing)
    make = exported(synthesis_spec)
    out.append(Row("tensorrt fp16", "tensorrt", "fp16",
                   None if trt else (lambda: open_engine(G, backend="tensorrt", device=device, onnx_path=make(),
                                                         precision="fp16")), reason=trt))
    return [r for r in out
            if r.backend in backends and (r.precision in precisions or r.baseline or r.backend == "auto")]
