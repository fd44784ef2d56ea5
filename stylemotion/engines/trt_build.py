"""Build a TensorRT plan from an ONNX file with the official Python API (TensorRT 10.x).

Builder -> network -> ONNX parser -> builder config (workspace limit, FP16 flag, timing cache) -> one
optimization profile over the batch axis -> ``build_serialized_network``. The profile shapes and the I/O names
come from the network's ExportSpec (``profile_shapes``, which needs no TensorRT and is tested everywhere); a graph
whose inputs or outputs are not the spec's is refused before the build.
"""
from __future__ import annotations

import os
from pathlib import Path

from .._optional import require
from ..errors import ConfigError, EngineBuildError
from ..export.spec import BatchProfile, ExportSpec


def profile_shapes(spec: ExportSpec, profile: BatchProfile) -> dict[str, tuple[tuple, tuple, tuple]]:
    """``{input: (min, opt, max)}`` shapes: the profile's sizes on "batch", fixed sizes elsewhere."""
    if not 1 <= profile.min <= profile.opt <= profile.max:
        raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got {profile}")
    out = {}
    for t in spec.inputs:
        others = [d for d in t.shape if isinstance(d, str) and d != "batch"]
        if others:
            raise ConfigError(f"input {t.name!r} has dynamic axes {others} besides batch; give them sizes")
        out[t.name] = tuple(tuple(n if d == "batch" else d for d in t.shape)
                            for n in (profile.min, profile.opt, profile.max))
    return out


def build_plan(onnx_path: str | os.PathLike, spec: ExportSpec, *, precision: str = "fp16",
               profile: BatchProfile | None = None, workspace_bytes: int = 4 << 30,
               timing_cache: str | os.PathLike | None = None) -> bytes:
    """Serialized engine bytes. Raises EngineBuildError with the parser's or builder's own messages."""
    trt = require("tensorrt", extra="tensorrt")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"precision must be fp32 or fp16, got {precision!r}")
    shapes = profile_shapes(spec, profile or spec.profile)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: the TensorRT ONNX parser refused it: {errors}")
    graph_inputs = sorted(network.get_input(i).name for i in range(network.num_inputs))
    graph_outputs = sorted(network.get_output(i).name for i in range(network.num_outputs))
    if graph_inputs != sorted(shapes) or graph_outputs != sorted(t.name for t in spec.outputs):
        raise EngineBuildError(f"{onnx_path}: the graph's inputs {graph_inputs} and outputs {graph_outputs} are not "
                               f"the spec {spec.name!r}'s {sorted(shapes)} and {sorted(t.name for t in spec.outputs)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineBuildError("this TensorRT has no FP16 builder flag (strongly typed networks only)")
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.exists() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        cache = config.create_timing_cache(b"")  # a corrupt or foreign timing cache: start a fresh one
        config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    timing = config.get_timing_cache()
    if cache_path is not None and timing is not None:
        from ..atomic import atomic_path

        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(timing.serialize()))
    return bytes(plan)
