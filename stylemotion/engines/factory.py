"""``open_engine``: pick the fastest backend available here, and say which and why.

``backend="auto"`` tries, in order: TensorRT (a native plan built from ``synthesis.onnx`` with the TensorRT 10
Python API by ``trt_build.py``, kept in the engine cache and run by ``trt_engine.py``; needs the ``tensorrt``
package, a CUDA device and ``synthesis.onnx`` from ``stylemotion export``), ONNX Runtime CUDA (needs
onnxruntime-gpu and ``synthesis.onnx``), PyTorch CUDA (FP16 blocks, CUDA graphs); then on the CPU: ONNX Runtime
when a ``synthesis.onnx`` is given (the caller asked for that graph), else the fastest float32 engine installed
for this CPU, by the benchmark's measurements (bench/results): OpenVINO on CPUs with AVX-512 (its kernels there
beat every other float32 path), else PyTorch with the fast CPU plan (``FastSynthesis``; on AVX2 CPUs it beats
ONNX Runtime and OpenVINO). ``EngineInfo.detail`` records the choice and the reasons others were passed over. A backend asked for by name is never replaced by another: it is opened on the device asked for, or an
EngineError says what is missing (e.g. ``backend="onnxruntime", device="cuda"`` without onnxruntime-gpu).

Every engine takes its I/O names and sizes from ``G``'s synthesis ExportSpec, and none moves or changes ``G``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from ..errors import ConfigError, EngineError
from ..export.networks import synthesis_spec
from ..export.spec import BatchProfile
from ..models.stylegan2 import Generator
from .base import Engine
from .cache import CacheKey, EngineCache, gpu_identity

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


def open_engine(G: Generator, *, backend: str = "auto", precision: str | None = None,
                device: str | None = None, onnx_path: str | os.PathLike | None = None,
                cuda_graphs: bool | None = None, max_batch: int = 64, threads: int | None = None,
                profile: BatchProfile | None = None, cache: EngineCache | None = None,
                noise_mode: str = "const", plan: str = "auto") -> Engine:
    """An engine for ``G``'s synthesis network (``onnx_path``: its exported ``synthesis.onnx``).

    ``noise_mode`` other than ``"const"`` (the noise exported graphs bake in) needs the PyTorch engine.
    ``plan`` (PyTorch CPU engine): ``"fast"``, ``"reference"`` or ``"auto"`` (see ``TorchEngine``).
    ``precision="bf16"`` (OpenVINO only) is a preview precision, never chosen by ``"auto"``.

    ``G`` is only read: the PyTorch engine renders with its own copy on ``device``; ``G`` keeps its device,
    dtype, training flag, ``requires_grad`` and parameters. TensorRT plans are built for ``profile`` (default:
    the spec's 1/8/32) and kept in ``cache``."""
    from .ort_engine import OrtEngine
    from .torch_engine import TorchEngine

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but CUDA is not available")
    onnx_file = Path(onnx_path) if onnx_path else None
    if onnx_file is not None and not onnx_file.is_file():
        raise EngineError(f"{onnx_file}: no such ONNX file (make one with `stylemotion export`)")
    passed: list[str] = []
    if noise_mode != "const":
        if backend not in ("auto", "torch"):
            raise ConfigError(f"noise_mode {noise_mode!r}: exported graphs use constant noise; only the torch "
                              f"backend renders {noise_mode!r} noise (asked: {backend})")
        backend = "torch"
        passed.append(f"noise_mode {noise_mode!r} needs the torch backend")
    providers = _ort_providers()
    spec = synthesis_spec(G)
    device_id = (torch.device(device).index or 0) if device is not None and cuda else 0

    if backend in ("auto", "tensorrt"):
        reason = ("the tensorrt package is not installed (pip install 'stylemotion[tensorrt]')"
                  if importlib.util.find_spec("tensorrt") is None else "no CUDA device" if not cuda else
                  "no synthesis.onnx given (make one with `stylemotion export`)" if onnx_file is None else None)
        if reason is None:
            return tensorrt_engine(G, onnx_file, precision=precision or "fp16", cache=cache,
                                   profile=profile, detail="; ".join(["chosen: TensorRT"] + passed))
        if backend == "tensorrt":
            raise EngineError(f"TensorRT engine unavailable: {reason}")
        passed.append(f"tensorrt: {reason}")
    if backend in ("auto", "onnxruntime") and cuda:
        reason = ("onnxruntime is not installed (pip install onnxruntime-gpu, or 'stylemotion[gpu]')"
                  if not providers else
                  f"this onnxruntime has no CUDAExecutionProvider (it has {providers}): install onnxruntime-gpu "
                  "(pip install 'stylemotion[gpu]') in place of onnxruntime"
                  if "CUDAExecutionProvider" not in providers else
                  "no synthesis.onnx given (make one with `stylemotion export`)" if onnx_file is None else
                  "fp16 asked (ORT CUDA runs the float32 graph)" if precision not in (None, "fp32") else None)
        if reason is None:
            return OrtEngine(onnx_file, spec, provider="cuda", max_batch=max_batch, device_id=device_id,
                             detail="; ".join(["chosen: ORT CUDA"] + passed))
        if backend == "onnxruntime":
            raise EngineError(f"ONNX Runtime CUDA engine unavailable on {device or 'cuda'}: {reason}")
        passed.append(f"onnxruntime cuda: {reason}")
    if backend in ("auto", "torch") and cuda:
        return TorchEngine(G, device=device or "cuda", precision=precision or "fp16",
                           cuda_graphs=True if cuda_graphs is None else cuda_graphs, max_batch=max_batch,
                           noise_mode=noise_mode, detail="; ".join(["chosen: PyTorch CUDA"] + passed))
    if backend == "openvino" or (backend == "auto" and onnx_file is None and precision in (None, "fp32")):
        reason = ("openvino is not installed (pip install 'stylemotion[openvino]')"
                  if importlib.util.find_spec("openvino") is None else
                  "OpenVINO runs on the CPU here, a CUDA device was asked for" if cuda else
                  f"{precision} asked (OpenVINO runs fp32 or bf16)" if precision not in (None, "fp32", "bf16") else
                  "this CPU has no AVX-512 (PyTorch's fast plan is faster on AVX2; bench/results)"
                  if backend == "auto" and "avx512f" not in cpu_flags() else None)
        if reason is None:
            return openvino_engine(G, onnx_file, precision=precision or "fp32", threads=threads, max_batch=max_batch,
                                   detail="; ".join(["chosen: OpenVINO CPU"] + passed))
        if backend == "openvino":
            raise EngineError(f"OpenVINO engine unavailable: {reason}")
        passed.append(f"openvino: {reason}")
    if backend in ("auto", "onnxruntime"):
        if "CPUExecutionProvider" in providers and onnx_file is not None and precision in (None, "fp32"):
            return OrtEngine(onnx_file, spec, provider="cpu", threads=threads, max_batch=max_batch,
                             detail="; ".join(["chosen: ORT CPU (the synthesis.onnx given)"] + passed))
        why = ("onnxruntime is not installed (pip install 'stylemotion[onnx]')" if not providers else
               "no synthesis.onnx given (make one with `stylemotion export`)" if onnx_file is None else
               "fp16 asked (ORT CPU runs fp32)")
        if backend == "onnxruntime":
            raise EngineError(f"ONNX Runtime engine unavailable: {why}")
        passed.append(f"onnxruntime cpu: {why}")
    if precision == "fp16":
        raise EngineError("fp16 needs CUDA (PyTorch CUDA or ONNX Runtime/TensorRT on a GPU); this is the CPU")
    if precision == "bf16":
        raise EngineError("bf16 is an OpenVINO preview precision: backend='openvino', precision='bf16'")
    return TorchEngine(G, device="cpu", precision="fp32", max_batch=max_batch, noise_mode=noise_mode, plan=plan,
                       detail="; ".join(["chosen: PyTorch CPU"] + passed))


def openvino_engine(G: Generator, onnx_file: Path | None, *, precision: str = "fp32", threads: int | None = None,
                    max_batch: int = 64, detail: str = "") -> Engine:
    """OpenVINO on the CPU: from ``onnx_file`` when given, else converted from ``G``'s fast CPU plan."""
    import copy

    from ..models.stylegan2_fast import FastSynthesis
    from .ov_engine import OpenVinoEngine

    spec = synthesis_spec(G)
    if onnx_file is not None:
        return OpenVinoEngine(onnx_file, spec, precision=precision, threads=threads, max_batch=max_batch,
                              detail=detail)
    synthesis = copy.deepcopy(G.synthesis).cpu().float()
    return OpenVinoEngine(FastSynthesis(synthesis, target="graph"), spec, precision=precision, threads=threads,
                          max_batch=max_batch, detail=detail)


def tensorrt_key(onnx_file: Path, *, precision: str, profile: BatchProfile, device: str = "cuda",
                 trt_version: str | None = None) -> CacheKey:
    """Everything a TensorRT plan depends on (the cache key)."""
    from .._optional import require
    from ..export.onnx_export import onnx_content_sha256

    if trt_version is None:
        trt_version = require("tensorrt", extra="tensorrt").__version__
    gpu, capability = gpu_identity(device)
    return CacheKey("synthesis", onnx_content_sha256(onnx_file), "tensorrt", trt_version, gpu, capability,
                    precision, (profile.min, profile.opt, profile.max))


def tensorrt_engine(G: Generator, onnx_file: Path, *, precision: str = "fp16", profile: BatchProfile | None = None,
                    cache: EngineCache | None = None, detail: str = "") -> Engine:
    """Load the plan for this ONNX file, GPU, TensorRT version, precision and profile from the cache, or build it."""
    from .trt_build import build_plan
    from .trt_engine import TensorRTEngine

    spec = synthesis_spec(G)
    profile = profile or spec.profile
    cache = cache or EngineCache()
    key = tensorrt_key(onnx_file, precision=precision, profile=profile)
    plan = cache.load(key)
    how = "plan from the cache"
    if plan is None:
        timing = cache.root / f"tensorrt-{key.backend_version}-sm{key.compute_capability}.timing"
        plan = build_plan(onnx_file, spec, precision=precision, profile=profile, timing_cache=timing)
        cache.store(key, plan)
        how = "plan built and cached"
    try:
        return TensorRTEngine(plan, spec, precision=precision, min_batch=profile.min, max_batch=profile.max,
                              detail=f"{detail}; {how}".strip("; "))
    except EngineError:
        cache.remove(key)  # a plan that does not load here is never trusted again
        raise
