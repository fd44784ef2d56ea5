"""The ONNX Runtime engine: CPU, CUDA or TensorRT execution providers, one ``synthesis.onnx`` for every batch.

On CUDA the input and output stay on the GPU (I/O binding to PyTorch tensors: no host round trip). On the CPU
``intra_op_num_threads`` sets the thread count (default: ONNX Runtime's).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .._optional import require
from ..errors import ConfigError, EngineError
from ..export.spec import ExportSpec, TensorSpec
from .base import check_ws, describe, info_from_spec, synthesis_io

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtEngine:
    """``spec``: the synthesis network's ExportSpec (``export.networks.synthesis_spec``); the graph's input and
    output names, sizes and float32 types are checked against it and bound by the spec's names."""

    def __init__(self, onnx_path: str | os.PathLike, spec: ExportSpec, *, provider: str = "cpu",
                 threads: int | None = None, max_batch: int = 64, device_id: int = 0, detail: str = ""):
        ort = require("onnxruntime")
        if provider not in PROVIDERS:
            raise ConfigError(f"provider must be one of {list(PROVIDERS)}, got {provider!r}")
        ws_spec, images_spec = synthesis_io(spec)
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise EngineError(f"ONNX Runtime here has no {PROVIDERS[provider]} (it has {available}); "
                              "for CUDA install onnxruntime-gpu (pip install 'stylemotion[gpu]')")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = [PROVIDERS[provider]] + (["CUDAExecutionProvider"] if provider == "tensorrt" else [])
        if provider != "cpu":
            # Run on PyTorch's current stream, so ORT sees ws only after the kernels that wrote it, and PyTorch
            # sees the images only after ORT wrote them, without a host synchronisation per frame.
            stream = str(torch.cuda.current_stream(device_id).cuda_stream)
            providers = [(p, {"device_id": device_id, "user_compute_stream": stream}) for p in providers]
        try:
            fallback = [] if provider == "cpu" else ["CPUExecutionProvider"]  # for nodes the GPU providers lack
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers + fallback)
        except Exception as exc:  # onnxruntime raises its own types for missing, corrupt or invalid models
            raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        inputs = [(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        if len(inputs) != 1 or not _matches(ws_spec, inputs[0][0], inputs[0][1]):
            raise EngineError(f"{onnx_path}: expected one input {describe(ws_spec)}, found {inputs}")
        outputs = {o.name: o for o in self.session.get_outputs()}
        output = outputs.get(images_spec.name)
        if output is None or not _matches(images_spec, output.name, output.shape):
            raise EngineError(f"{onnx_path}: expected an output {describe(images_spec)}, found "
                              f"{[(o.name, o.shape, o.type) for o in outputs.values()]}")
        if inputs[0][2] != "tensor(float)" or output.type != "tensor(float)":
            raise EngineError(f"{onnx_path}: this engine runs float32 graphs; {ws_spec.name} is {inputs[0][2]} and "
                              f"{output.name} is {output.type} (use synthesis.onnx, not synthesis_fp16.onnx)")
        self.input_name, self.output_name = ws_spec.name, images_spec.name
        self.channels = images_spec.shape[1]
        self.provider, self.device_id = provider, device_id
        self.onnx_path = str(onnx_path)
        device = "cpu" if provider == "cpu" else f"cuda:{device_id}"
        self.info = info_from_spec(spec, backend="onnxruntime", precision="fp32", device=device, min_batch=1,
                                   max_batch=max_batch,
                                   detail=(f"{self.session.get_providers()[0]} {detail}").strip())

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info)
        try:
            return self._run(ws)
        except Exception as exc:  # a graph that loads can still fail in a kernel (make fuzz found one)
            raise EngineError(f"{self.onnx_path}: ONNX Runtime failed running it ({type(exc).__name__}: "
                              f"{str(exc)[:500]})") from exc

    def _run(self, ws: torch.Tensor) -> torch.Tensor:
        if self.provider == "cpu":
            out = self.session.run([self.output_name], {self.input_name: ws.detach().cpu().numpy()})[0]
            return torch.from_numpy(out)
        ws = ws.to(f"cuda:{self.device_id}")
        out = torch.empty((ws.shape[0], self.channels, self.info.resolution, self.info.resolution), device=ws.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", self.device_id, np.float32, tuple(ws.shape), ws.data_ptr())
        binding.bind_output(self.output_name, "cuda", self.device_id, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


def _matches(t: TensorSpec, name: str, shape) -> bool:
    """The graph's tensor has the spec's name and rank, and the spec's size wherever both give a fixed size
    (a symbolic dimension on either side matches any size)."""
    shape = list(shape or [])
    return name == t.name and len(shape) == len(t.shape) and all(
        isinstance(d, str) or not isinstance(g, int) or g == d for d, g in zip(t.shape, shape))
