"""Run a TensorRT plan with ``execute_async_v3`` on device buffers owned by PyTorch, on PyTorch's stream.

The plan's I/O tensors are bound by the names in the synthesis network's ExportSpec (the names the ONNX file
was exported with), and checked against it on load. Output buffers are allocated once per batch size and reused
(the returned tensor is that buffer).
"""
from __future__ import annotations

import torch

from .._optional import require
from ..errors import EngineError
from ..export.spec import ExportSpec
from .base import check_ws, info_from_spec, synthesis_io


class TensorRTEngine:
    def __init__(self, plan: bytes, spec: ExportSpec, *, precision: str = "fp16", min_batch: int = 1,
                 max_batch: int = 32, device_id: int = 0, detail: str = ""):
        trt = require("tensorrt", extra="tensorrt")
        ws_spec, images_spec = synthesis_io(spec)
        self.input_name, self.output_name = ws_spec.name, images_spec.name
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError("TensorRT could not deserialize the plan (built for another GPU or TensorRT version?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted([self.input_name, self.output_name]):
            raise EngineError(f"the plan's I/O tensors are {names}, the spec {spec.name!r} says input "
                              f"{self.input_name!r} and output {self.output_name!r}")
        if self.engine.get_tensor_mode(self.input_name) != trt.TensorIOMode.INPUT:
            raise EngineError(f"the plan's {self.input_name!r} is not an input")
        for name in names:  # FP16 plans keep float32 I/O; a float16-I/O plan would read our buffers wrongly
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise EngineError(f"the plan's {name!r} is {self.engine.get_tensor_dtype(name)}, expected float32")
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda", device_id)
        self.channels = images_spec.shape[1]
        self._outputs: dict[int, torch.Tensor] = {}
        self.info = info_from_spec(spec, backend="tensorrt", precision=precision, device=str(self.device),
                                   min_batch=min_batch, max_batch=max_batch, detail=detail)

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info).to(self.device)
        batch = ws.shape[0]
        out = self._outputs.get(batch)
        if out is None:
            res = self.info.resolution
            out = self._outputs[batch] = torch.empty(batch, self.channels, res, res, device=self.device)
        self.context.set_input_shape(self.input_name, tuple(ws.shape))
        self.context.set_tensor_address(self.input_name, ws.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        return out
