"""The OpenVINO engine (CPU): the synthesis network compiled by OpenVINO, float32 unless asked otherwise.

The model comes from ``synthesis.onnx`` when one is given, else straight from PyTorch: ``ov.convert_model`` on the
CPU inference plan (``FastSynthesis`` with box-filter FIRs, which OpenVINO fuses well), with a dynamic batch.

Precision: OpenVINO's CPU plugin runs bf16 by default on CPUs with AMX or AVX-512 bf16, silently, and that is
not the network we promise (max error 0.1 to 0.26 on config-f). This engine always asks for a precision:
``fp32`` (the default) or ``bf16`` (an opt-in preview: images that look the same, PSNR against fp32 measured by
the benchmark, about 38 dB on config-f 256). The precision the compiled model really runs is read back and must
equal the one asked for; a CPU without bf16 support is an ``EngineError``, never a quiet fall back.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch

from .._optional import require
from ..errors import ConfigError, EngineError
from ..export.spec import ExportSpec
from .base import check_ws, describe, info_from_spec, synthesis_io

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def openvino_module():
    return require("openvino", extra="openvino")


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``FP32``, ``BF16``, ``INT8``, ...)."""
    ov = openvino_module()
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def read_back_precision(compiled) -> str:
    """The precision a compiled model runs (``"f32"``, ``"bf16"``, ``"f16"``), as OpenVINO reports it."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


class OpenVinoEngine:
    """``model``: a path to ``synthesis.onnx`` / ``.xml``, or an ``nn.Module`` taking ``ws`` (converted here).
    ``spec``: the synthesis ExportSpec (I/O names and sizes)."""

    def __init__(self, model, spec: ExportSpec, *, precision: str = "fp32", threads: int | None = None,
                 max_batch: int = 64, detail: str = ""):
        ov = openvino_module()
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {list(PRECISIONS)}, got {precision!r}")
        ws_spec, images_spec = synthesis_io(spec)
        if precision == "bf16" and "BF16" not in cpu_capabilities():
            raise EngineError(f"bf16 asked, but this CPU has no bf16 support (OpenVINO capabilities "
                              f"{cpu_capabilities()}); use fp32")
        core = ov.Core()
        t0 = time.perf_counter()
        if isinstance(model, (str, os.PathLike)):
            try:
                ov_model = core.read_model(str(model))
            except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
                raise EngineError(f"{model}: OpenVINO cannot read it ({type(exc).__name__}: {exc})") from exc
            source = str(model)
        else:
            example = torch.zeros(1, *ws_spec.shape[1:])
            shape = ov.PartialShape([-1, *ws_spec.shape[1:]])
            with torch.no_grad(), warnings.catch_warnings():
                # Tracing meets the shape checks (shapes.assert_shape) on concrete example sizes: expected here.
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                ov_model = ov.convert_model(model, example_input=example, input=[shape])
            source = f"converted from {type(model).__name__}"
        inputs = ov_model.inputs
        if len(inputs) != 1 or list(inputs[0].get_partial_shape())[1:] != [ov.Dimension(d) for d in ws_spec.shape[1:]]:
            raise EngineError(f"{source}: expected one input {describe(ws_spec)}, found "
                              f"{[(i.get_any_name(), str(i.get_partial_shape())) for i in inputs]}")
        config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as exc:
            raise EngineError(f"{source}: OpenVINO cannot compile it for the CPU ({type(exc).__name__}: {exc})") from exc
        self.build_seconds = time.perf_counter() - t0
        got = read_back_precision(self.compiled)
        want = PRECISIONS[precision]
        if got != want:
            raise EngineError(f"OpenVINO compiled for {got}, not the {want} asked for")
        self.precision_read_back = got
        self.request = self.compiled.create_infer_request()
        self.channels = images_spec.shape[1]
        self.info = info_from_spec(spec, backend="openvino", precision=precision, device="cpu", min_batch=1,
                                   max_batch=max_batch,
                                   detail=(f"OpenVINO {ov.__version__} CPU, runs {got} (read back), {source} "
                                           f"{detail}").strip())

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info)
        try:
            self.request.infer({0: np.ascontiguousarray(ws.detach().cpu().numpy())})
        except Exception as exc:  # a model that compiles can still fail in a kernel
            raise EngineError(f"OpenVINO failed running {self.info.detail or 'the model'} ({type(exc).__name__}: "
                              f"{str(exc)[:500]})") from exc
        out = self.request.get_output_tensor(0).data
        return torch.from_numpy(np.array(out, copy=True))
