"""``open_engine``: the engine for a model on this machine, and why that one.

``backend="auto"`` measures rather than guesses (``selection.py``): every engine that can render this model here is
a candidate, timed once at first use at the batch the caller will run (``batch=``), and the choice is kept in the
engine cache for this machine, model, batch, precision and library versions, so the next run builds the chosen
engine at once. ``EngineInfo.detail`` gives the figures it chose by and why other engines were not candidates.
The candidates:

- CUDA: TensorRT (the ``tensorrt`` package and a ``synthesis.onnx``; the plan is built by ``trt_build.py`` and kept
  in the engine cache), ONNX Runtime CUDA (onnxruntime-gpu and a ``synthesis.onnx``; float32), PyTorch (its FP16
  blocks unless fp32 is asked) with CUDA graphs and without (only the one asked for when ``cuda_graphs`` is given);
- CPU, float32: PyTorch (the fast CPU plan ``FastSynthesis``, unless ``plan`` says otherwise), OpenVINO (on the
  ``synthesis.onnx`` given, else converted from the fast CPU plan), ONNX Runtime (on the ``synthesis.onnx`` given);
- CPU, ``precision="bf16"`` (an OpenVINO preview precision, used only when asked): OpenVINO bf16 on the reference
  graph and on the fast CPU plan's graph, both converted from ``G`` (which is faster differs between CPUs), or on
  the ``synthesis.onnx`` given.

``noise_mode`` other than ``"const"`` leaves the PyTorch candidates only (exported graphs bake constant noise in).

A backend asked for by name is never replaced by another and nothing is measured: it is opened on the device asked
for, or an EngineError says what is missing (e.g. ``backend="onnxruntime", device="cuda"`` without onnxruntime-gpu).
The one measurement inside a named backend is the bf16 preview's graph (``backend="openvino", precision="bf16"``
without an ONNX file), chosen as ``auto`` chooses.

Every engine takes its I/O names and sizes from ``G``'s synthesis ExportSpec, and none moves or changes ``G``.
"""
from __future__ import annotations

import dataclasses
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
from .selection import Candidate, Measurement, choice_key, choose, model_sha256

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = (None, "fp32", "fp16", "bf16")
OPENVINO_GRAPHS = ("fast", "reference")


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


@dataclasses.dataclass(frozen=True)
class _Request:
    """open_engine's arguments, checked: what every candidate builder reads."""

    G: Generator
    cuda: bool
    device: str | None
    device_id: int
    precision: str | None
    onnx_file: Path | None
    cuda_graphs: bool | None
    max_batch: int
    threads: int | None
    profile: BatchProfile | None
    cache: EngineCache | None
    noise_mode: str
    plan: str
    batch: int


def open_engine(G: Generator, *, backend: str = "auto", precision: str | None = None,
                device: str | None = None, onnx_path: str | os.PathLike | None = None,
                cuda_graphs: bool | None = None, max_batch: int = 64, threads: int | None = None,
                profile: BatchProfile | None = None, cache: EngineCache | None = None,
                noise_mode: str = "const", plan: str = "auto", batch: int | None = None,
                measurement: Measurement | None = None) -> Engine:
    """An engine for ``G``'s synthesis network (``onnx_path``: its exported ``synthesis.onnx``).

    ``batch``: the batch size the caller will mostly run (default 1); ``auto`` measures its candidates at it.
    ``measurement``: how long ``auto`` times (``selection.Measurement``; its default is a warm-up and 3 runs, at
    most about 10 s). ``cache``: where plans and ``auto``'s choices are kept (default ``EngineCache()``).
    ``noise_mode`` other than ``"const"`` (the noise exported graphs bake in) needs the PyTorch engine.
    ``plan`` (PyTorch CPU engine): ``"fast"``, ``"reference"`` or ``"auto"`` (see ``TorchEngine``).
    ``precision="bf16"`` (OpenVINO only) is a preview precision, never chosen unless asked.

    ``G`` is only read: the PyTorch engine renders with its own copy on ``device``; ``G`` keeps its device,
    dtype, training flag, ``requires_grad`` and parameters. TensorRT plans are built for ``profile`` (default:
    the spec's 1/8/32) and kept in ``cache``."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS[1:]} or None, got {precision!r}")
    batch = 1 if batch is None else int(batch)
    if not 1 <= batch <= max_batch:
        raise ConfigError(f"batch {batch} must be between 1 and max_batch {max_batch}")
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but CUDA is not available")
    onnx_file = Path(onnx_path) if onnx_path else None
    if onnx_file is not None and not onnx_file.is_file():
        raise EngineError(f"{onnx_file}: no such ONNX file (make one with `stylemotion export`)")
    if noise_mode != "const" and backend not in ("auto", "torch"):
        raise ConfigError(f"noise_mode {noise_mode!r}: exported graphs use constant noise; only the torch "
                          f"backend renders {noise_mode!r} noise (asked: {backend})")
    if precision == "bf16" and backend not in ("auto", "openvino"):
        raise EngineError("bf16 is an OpenVINO preview precision: backend='openvino', precision='bf16'")
    device_id = (torch.device(device).index or 0) if device is not None and cuda else 0
    req = _Request(G, cuda, device, device_id, precision, onnx_file, cuda_graphs, max_batch, threads, profile,
                   cache, noise_mode, plan, batch)
    if backend == "auto":
        passed: list[str] = []
        candidates = _auto_candidates(req, passed)
        return _chosen(req, candidates, passed, measurement)
    return _named(req, backend, measurement)


# ---------------------------------------------------------------- auto: the candidates and the choice


def _auto_candidates(req: _Request, passed: list[str]) -> list[Candidate]:
    """Every engine that can render this request here, in a fixed order; ``passed`` gets why others cannot."""
    from .torch_engine import TorchEngine

    if req.precision == "bf16":
        if req.cuda:
            raise EngineError("bf16 is an OpenVINO preview precision on the CPU; this request is for CUDA")
        reason = _openvino_missing(req, "bf16")
        if reason is not None:
            raise EngineError(f"bf16 needs OpenVINO: {reason}")
        return _openvino_bf16_candidates(req)
    if req.noise_mode != "const":
        passed.append(f"noise_mode {req.noise_mode!r} needs the torch backend")
    out: list[Candidate] = []
    if req.cuda:
        if req.precision not in (None, "fp16", "fp32"):
            raise EngineError(f"{req.precision} runs on OpenVINO on the CPU, not on CUDA")
        if req.noise_mode == "const":
            profile = req.profile or synthesis_spec(req.G).profile
            reason = _tensorrt_missing(req) or (
                None if profile.min <= req.batch <= profile.max else
                f"batch {req.batch} is outside the plan's profile {profile.min}..{profile.max}; pass profile=")
            if reason is None:
                p = req.precision or "fp16"
                out.append(Candidate(f"tensorrt-{p}", lambda: tensorrt_engine(
                    req.G, req.onnx_file, precision=p, cache=req.cache, profile=req.profile)))
            else:
                passed.append(f"tensorrt: {reason}")
            reason = _ort_cuda_missing(req)
            if reason is None:
                out.append(Candidate("onnxruntime-cuda", lambda: _ort(req, "cuda")))
            else:
                passed.append(f"onnxruntime cuda: {reason}")
        p = req.precision or "fp16"
        for graphs in ([True, False] if req.cuda_graphs is None else [req.cuda_graphs]):
            name = f"torch-cuda-{p}-{'graphs' if graphs else 'eager'}"
            out.append(Candidate(name, lambda graphs=graphs: TorchEngine(
                req.G, device=req.device or "cuda", precision=p, cuda_graphs=graphs, max_batch=req.max_batch,
                noise_mode=req.noise_mode)))
        return out
    if req.precision == "fp16":
        raise EngineError("fp16 needs CUDA (PyTorch CUDA or ONNX Runtime/TensorRT on a GPU); this is the CPU")
    passed.append(f"tensorrt: {_tensorrt_missing(req)}")
    fast = req.plan in ("auto", "fast") and req.noise_mode == "const"
    out.append(Candidate(f"torch-{'fast' if fast else 'reference'}", lambda: TorchEngine(
        req.G, device="cpu", precision="fp32", max_batch=req.max_batch, noise_mode=req.noise_mode, plan=req.plan)))
    if req.noise_mode != "const":
        return out
    reason = _openvino_missing(req, "fp32")
    if reason is None:
        out.append(Candidate("openvino-onnx" if req.onnx_file else "openvino-fast", lambda: openvino_engine(
            req.G, req.onnx_file, precision="fp32", threads=req.threads, max_batch=req.max_batch)))
    else:
        passed.append(f"openvino: {reason}")
    providers = _ort_providers()
    if "CPUExecutionProvider" in providers and req.onnx_file is not None:
        out.append(Candidate("onnxruntime-cpu", lambda: _ort(req, "cpu")))
    else:
        passed.append("onnxruntime cpu: " + ("onnxruntime is not installed (pip install 'stylemotion[onnx]')"
                                             if not providers else
                                             "no synthesis.onnx given (make one with `stylemotion export`)"))
    return out


def _openvino_bf16_candidates(req: _Request) -> list[Candidate]:
    from .ov_engine import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        raise EngineError(f"bf16 asked, but this CPU has no bf16 support (OpenVINO capabilities "
                          f"{cpu_capabilities()}); use fp32")
    if req.onnx_file is not None:
        return [Candidate("openvino-bf16-onnx", lambda: openvino_engine(
            req.G, req.onnx_file, precision="bf16", threads=req.threads, max_batch=req.max_batch))]
    return [Candidate(f"openvino-bf16-{graph}", lambda graph=graph: openvino_engine(
        req.G, None, precision="bf16", threads=req.threads, max_batch=req.max_batch, graph=graph))
        for graph in ("reference", "fast")]


def _chosen(req: _Request, candidates: list[Candidate], passed: list[str],
            measurement: Measurement | None) -> Engine:
    """Build the one candidate, or the fastest of several (measured, or from the cache), and say why."""
    if len(candidates) == 1:
        engine = candidates[0].build()
        return _with_detail(engine, "; ".join([f"auto: {candidates[0].name}, the only candidate here"] + passed))
    cache = req.cache
    if cache is None:
        try:
            cache = EngineCache()
        except EngineError as exc:  # the choice is still measured; it is only not kept
            passed.append(f"choice not cached: {exc}")
    key = choice_key(device=req.device or ("cuda" if req.cuda else "cpu"), threads=req.threads,
                     model=model_sha256(req.G, req.onnx_file), batch=req.batch,
                     precision=req.precision or ("default" if req.cuda else "fp32"),
                     candidates=candidates)
    with torch.no_grad():
        ws = synthesis_spec(req.G).sample(req.batch)[0].detach().float().cpu()
    engine, choice = choose(candidates, key, ws, cache=cache, settings=measurement or Measurement())
    return _with_detail(engine, "; ".join([choice.describe()] + passed))


def _with_detail(engine: Engine, detail: str) -> Engine:
    """The engine, its ``info.detail`` led by ``detail`` (why it was chosen)."""
    own = engine.info.detail
    engine.info = dataclasses.replace(engine.info, detail=f"{detail}; {own}" if own else detail)
    return engine


# ---------------------------------------------------------------- a backend asked for by name


def _named(req: _Request, backend: str, measurement: Measurement | None) -> Engine:
    from .torch_engine import TorchEngine

    if backend == "tensorrt":
        reason = _tensorrt_missing(req)
        if reason is not None:
            raise EngineError(f"TensorRT engine unavailable: {reason}")
        return tensorrt_engine(req.G, req.onnx_file, precision=req.precision or "fp16", cache=req.cache,
                               profile=req.profile, detail="backend asked: TensorRT")
    if backend == "onnxruntime" and req.cuda:
        reason = _ort_cuda_missing(req)
        if reason is not None:
            raise EngineError(f"ONNX Runtime CUDA engine unavailable on {req.device or 'cuda'}: {reason}")
        return _ort(req, "cuda", detail="backend asked: ORT CUDA")
    if backend == "onnxruntime":
        providers = _ort_providers()
        why = ("onnxruntime is not installed (pip install 'stylemotion[onnx]')" if not providers else
               "no synthesis.onnx given (make one with `stylemotion export`)" if req.onnx_file is None else
               f"{req.precision} asked (ORT CPU runs fp32)" if req.precision not in (None, "fp32") else
               "this onnxruntime has no CPUExecutionProvider" if "CPUExecutionProvider" not in providers else None)
        if why is not None:
            raise EngineError(f"ONNX Runtime engine unavailable: {why}")
        return _ort(req, "cpu", detail="backend asked: ORT CPU")
    if backend == "openvino":
        reason = _openvino_missing(req, req.precision or "fp32")
        if reason is not None:
            raise EngineError(f"OpenVINO engine unavailable: {reason}")
        if req.precision == "bf16" and req.onnx_file is None:  # the preview's graph: the faster here, measured once
            return _chosen(req, _openvino_bf16_candidates(req), ["backend asked: OpenVINO bf16"], measurement)
        if req.precision == "bf16":
            _openvino_bf16_candidates(req)  # says so when this CPU has no bf16
        return openvino_engine(req.G, req.onnx_file, precision=req.precision or "fp32", threads=req.threads,
                               max_batch=req.max_batch, detail="backend asked: OpenVINO CPU")
    if req.cuda:
        return TorchEngine(req.G, device=req.device or "cuda", precision=req.precision or "fp16",
                           cuda_graphs=True if req.cuda_graphs is None else req.cuda_graphs,
                           max_batch=req.max_batch, noise_mode=req.noise_mode, detail="backend asked: PyTorch CUDA")
    if req.precision == "fp16":
        raise EngineError("fp16 needs CUDA (PyTorch CUDA or ONNX Runtime/TensorRT on a GPU); this is the CPU")
    return TorchEngine(req.G, device="cpu", precision="fp32", max_batch=req.max_batch, noise_mode=req.noise_mode,
                       plan=req.plan, detail="backend asked: PyTorch CPU")


# ---------------------------------------------------------------- why a backend cannot run here (None: it can)


def _tensorrt_missing(req: _Request) -> str | None:
    return ("the tensorrt package is not installed (pip install 'stylemotion[tensorrt]')"
            if importlib.util.find_spec("tensorrt") is None else "no CUDA device" if not req.cuda else
            "no synthesis.onnx given (make one with `stylemotion export`)" if req.onnx_file is None else None)


def _ort_cuda_missing(req: _Request) -> str | None:
    providers = _ort_providers()
    return ("onnxruntime is not installed (pip install onnxruntime-gpu, or 'stylemotion[gpu]')"
            if not providers else
            f"this onnxruntime has no CUDAExecutionProvider (it has {providers}): install onnxruntime-gpu "
            "(pip install 'stylemotion[gpu]') in place of onnxruntime"
            if "CUDAExecutionProvider" not in providers else
            "no synthesis.onnx given (make one with `stylemotion export`)" if req.onnx_file is None else
            "fp16 asked (ORT CUDA runs the float32 graph)" if req.precision not in (None, "fp32") else None)


def _openvino_missing(req: _Request, precision: str) -> str | None:
    return ("openvino is not installed (pip install 'stylemotion[openvino]')"
            if importlib.util.find_spec("openvino") is None else
            "OpenVINO runs on the CPU here, a CUDA device was asked for" if req.cuda else
            f"{precision} asked (OpenVINO runs fp32 or bf16)" if precision not in ("fp32", "bf16") else None)


# ---------------------------------------------------------------- builders


def _ort(req: _Request, provider: str, detail: str = "") -> Engine:
    from .ort_engine import OrtEngine

    return OrtEngine(req.onnx_file, synthesis_spec(req.G), provider=provider, max_batch=req.max_batch,
                     device_id=req.device_id, threads=req.threads if provider == "cpu" else None, detail=detail)


def openvino_engine(G: Generator, onnx_file: Path | None, *, precision: str = "fp32", threads: int | None = None,
                    max_batch: int = 64, detail: str = "", graph: str = "fast") -> Engine:
    """OpenVINO on the CPU: from ``onnx_file`` when given, else converted from ``G``: ``graph="fast"``, its fast
    CPU plan (``FastSynthesis``, box-filter FIRs); ``graph="reference"``, the reference network as
    ``synthesis.onnx`` holds it (batch-independent modulated convolution, constant noise)."""
    import copy

    from ..models.stylegan2_fast import FastSynthesis
    from .ov_engine import OpenVinoEngine

    if graph not in OPENVINO_GRAPHS:
        raise ConfigError(f"graph must be one of {OPENVINO_GRAPHS}, got {graph!r}")
    spec = synthesis_spec(G)
    if onnx_file is not None:
        return OpenVinoEngine(onnx_file, spec, precision=precision, threads=threads, max_batch=max_batch,
                              detail=detail)
    if graph == "reference":
        own = copy.deepcopy(G).cpu().float().eval().requires_grad_(False)
        return OpenVinoEngine(synthesis_spec(own).module, spec, precision=precision, threads=threads,
                              max_batch=max_batch, detail=f"reference graph {detail}".strip())
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
