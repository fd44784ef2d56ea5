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
from .base import EngineInfo, check_ws

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtEngine:
    def __init__(self, onnx_path: str | os.PathLike, *, num_ws: int, w_dim: int, resolution: int,
                 provider: str = "cpu", threads: int | None = None, max_batch: int = 64, device_id: int = 0,
                 detail: str = ""):
        ort = require("onnxruntime")
        if provider not in PROVIDERS:
            raise ConfigError(f"provider must be one of {list(PROVIDERS)}, got {provider!r}")
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
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers + ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for missing, corrupt or invalid models
            raise EngineError(f"{onnx_path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from exc
        inputs = [(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        if len(inputs) != 1 or inputs[0][0] != "ws" or list(inputs[0][1][1:]) != [num_ws, w_dim]:
            raise EngineError(f"{onnx_path}: expected one input ws [batch, {num_ws}, {w_dim}], found {inputs}")
        output = self.session.get_outputs()[0]
        if inputs[0][2] != "tensor(float)" or output.type != "tensor(float)":
            raise EngineError(f"{onnx_path}: this engine runs float32 graphs; ws is {inputs[0][2]} and "
                              f"{output.name} is {output.type} (use synthesis.onnx, not synthesis_fp16.onnx)")
        self.output_name = output.name
        self.channels = output.shape[1] if isinstance(output.shape[1], int) else 3
        self.provider, self.device_id = provider, device_id
        device = "cpu" if provider == "cpu" else f"cuda:{device_id}"
        self.info = EngineInfo("onnxruntime", "fp32", device, 1, max_batch, resolution, num_ws, w_dim,
                               (f"{self.session.get_providers()[0]} {detail}").strip())

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info)
        if self.provider == "cpu":
            out = self.session.run([self.output_name], {"ws": ws.detach().cpu().numpy()})[0]
            return torch.from_numpy(out)
        ws = ws.to(f"cuda:{self.device_id}")
        out = torch.empty((ws.shape[0], self.channels, self.info.resolution, self.info.resolution), device=ws.device)
        binding = self.session.io_binding()
        binding.bind_input("ws", "cuda", self.device_id, np.float32, tuple(ws.shape), ws.data_ptr())
        binding.bind_output(self.output_name, "cuda", self.device_id, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out
