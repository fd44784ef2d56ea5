"""The PyTorch engine: CPU or CUDA, float32 or the generator's FP16 blocks, optional CUDA graphs per batch size.

The engine renders with its own copy of the generator (``copy.deepcopy``, then moved to the engine's device and
put in eval mode): the caller's module keeps its device, dtype, training flag, ``requires_grad`` and parameters.
That costs one copy of the weights on the engine's device; later changes to the caller's module do not reach
the engine.

With CUDA graphs, ``prepare(batches)`` captures one graph per batch *bucket* (after a warm-up on a side stream),
largest first, into one shared memory pool, with static input and output buffers; ``run`` copies ws into the
smallest bucket that holds the batch (the rows beyond it are left as they are and their images ignored), replays
the graph and returns the first rows of that bucket's static output: no allocation and no host sync in the
per-frame path. The returned images are a buffer the next run reuses: a caller that reads them while other threads
may run the same engine holds ``engine.lock`` from ``run`` until it has read them (it is re-entrant; ``run`` takes
it too). Capture rules, each from a crash or a silent fault seen on a GPU:

- capture happens in ``prepare``, which the hub and the streamer call before any stream is admitted; ``run``
  captures only for a batch larger than every prepared bucket (an engine used on its own, without ``prepare``);
- capture uses ``capture_error_mode="thread_local"``, a capture stream made on the engine's device, and the
  engine's device as the current one (a capture on ``cuda:1`` while ``cuda:0`` is current recorded nothing);
- static buffers are made outside inference mode, so a batch captured from inference mode also runs outside it;
- a capture that fails turns CUDA graphs off for this engine and renders eagerly from then on, said in
  ``info.detail`` and the log, instead of failing every later frame.

``plan``: ``"fast"`` (the default on the CPU for float32 and constant noise) renders with ``FastSynthesis``, the
CPU inference plan of the same network (Winograd for the 512-channel convolutions, the upsampling convolution as
one matrix product, constants folded: about 0.55x the time of the official form on 2 CPU cores, bench/results);
``"cuda"`` (the default on CUDA for constant noise) renders with ``CudaSynthesis``, the GPU inference plan (upsampling
and FIR folded into one convolution, per-sample scales around shared-weight convolutions, one epilogue per layer,
FP16 channels-last: ``models/stylegan2_cuda.py``); ``fp16_blocks`` (``"official"`` or ``"all"``) says which blocks
run in FP16 at ``precision="fp16"``, ``epilogue`` (``"eager"`` or ``"compile"``) how the epilogue runs. It runs on
the CPU too (the tests compare it there with the reference). A network the plan cannot take falls back to the
reference, and ``info.detail`` says why. ``"reference"`` renders with ``G.synthesis`` itself, in the official
grouped form (the benchmark's baseline); so do non-constant noise modes.

On the CPU the engine asks glibc to keep freed memory for reuse (``_malloc.py``: without it every large tensor is a
fresh mmap and a forward pass spends 40% of its time faulting pages in); ``retain_memory=False`` leaves malloc as
it is (the benchmark's baseline row, which runs as the official code would).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import threading

import torch

from ..errors import ConfigError, EngineError
from ..export.networks import synthesis_spec
from ..models.stylegan2 import Generator
from .._malloc import retain_freed_memory
from ..models.stylegan2_cuda import EPILOGUES, CudaSynthesis, plannable_reason
from ..models.stylegan2_fast import FastSynthesis
from .base import check_ws, info_from_spec


log = logging.getLogger(__name__)

NOISE_MODES = ("const", "random", "none")  # only this engine renders other than the exported constant noise
PLANS = ("auto", "fast", "cuda", "reference")


class TorchEngine:
    def __init__(self, G: Generator, *, device: str | torch.device = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False, max_batch: int = 64, noise_mode: str = "const", plan: str = "auto",
                 retain_memory: bool = True, detail: str = "", fp16_blocks: str = "official",
                 epilogue: str = "auto"):
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, got {precision!r}")
        if plan not in PLANS:
            raise ConfigError(f"plan must be one of {PLANS}, got {plan!r}")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        device = torch.device(device)
        if cuda_graphs and device.type != "cuda":
            raise ConfigError("CUDA graphs need a CUDA device")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError("the torch engine was asked for CUDA, but CUDA is not available")
        fast_ok = device.type == "cpu" and precision == "fp32" and noise_mode == "const"
        if plan == "fast" and not fast_ok:
            raise ConfigError("the fast plan renders float32 with constant noise on the CPU; asked: "
                              f"{precision}, noise {noise_mode!r}, {device}")
        if fp16_blocks not in ("official", "all"):
            raise ConfigError(f"fp16_blocks must be 'official' or 'all', got {fp16_blocks!r}")
        if epilogue not in ("auto",) + EPILOGUES:
            raise ConfigError(f"epilogue must be 'auto' or one of {EPILOGUES}, got {epilogue!r}")
        if plan == "cuda" and noise_mode != "const":
            raise ConfigError(f"the cuda plan renders constant noise; asked: noise {noise_mode!r}")
        fallback = ""
        if plan == "cuda" or (plan == "auto" and device.type == "cuda" and noise_mode == "const"):
            why = plannable_reason(G.synthesis)
            if why is None:
                plan = "cuda"
            else:
                fallback = f", reference network (the cuda plan cannot take it: {why})"
                plan = "reference"
        self.plan = "fast" if plan == "fast" or (plan == "auto" and fast_ok) else plan if plan == "cuda" \
            else "reference"
        self.device = device
        self.G = copy.deepcopy(G).to(device).eval().requires_grad_(False)  # never the caller's module
        self.fast = FastSynthesis(self.G.synthesis, target="eager") if self.plan == "fast" else None
        self.cuda_plan = None
        if self.plan == "cuda":
            self.cuda_plan, note = self._build_cuda_plan("none" if precision == "fp32" else fp16_blocks, epilogue)
            fallback += note
        spec = synthesis_spec(self.G)
        self.device, self.precision, self.cuda_graphs, self.noise_mode = device, precision, cuda_graphs, noise_mode
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = None  # one memory pool shared by every captured batch size
        self._stream = None  # the stream every replay runs on (CUDA graphs)
        self.lock = threading.RLock()  # copy-in, replay and reading the static output: one thread at a time
        extra = (", CUDA graphs per batch size" if cuda_graphs else "") + (
            f", {self.cuda_plan.description}" if self.cuda_plan is not None else f", {self.plan} plan") + fallback
        if device.type == "cpu" and retain_memory:
            extra += ", freed memory kept for reuse" if retain_freed_memory() else ", malloc left as it is"
        self.info = info_from_spec(spec, backend="torch", precision=precision, device=str(device), min_batch=1,
                                   max_batch=max_batch, detail=(detail + extra).strip(", "))

    def _build_cuda_plan(self, fp16_blocks: str, epilogue: str) -> tuple[CudaSynthesis, str]:
        """The CUDA plan, with the fused (compiled) epilogue where it builds: ``"auto"`` compiles on CUDA when
        Triton is there (measured faster at every batch on an H200, bench/results) and runs it once at batch 1 and
        2 here, so that compilation happens now, never inside a CUDA graph capture; a compile that fails leaves
        the eager epilogue, said in ``info.detail``."""
        cuda = self.device.type == "cuda"
        if epilogue == "auto":
            import importlib.util

            epilogue = "compile" if cuda and importlib.util.find_spec("triton") is not None else "eager"

        def build(mode):
            return CudaSynthesis(self.G.synthesis, fp16_blocks=fp16_blocks, channels_last=cuda,
                                 epilogue=mode).to(self.device)

        plan = build(epilogue)
        if epilogue != "compile":
            return plan, ""
        try:
            with self._on_device(), torch.no_grad():
                for n in (1, 2):
                    plan(torch.zeros(n, self.G.num_ws, self.G.w_dim, device=self.device))
        except Exception as exc:  # noqa: BLE001 - torch.compile fails in many ways; the eager epilogue always runs
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log.warning("the compiled epilogue did not build (%s); using the eager one", reason)
            return build("eager"), f", compiled epilogue failed ({reason})"
        return plan, ""

    def _forward(self, ws: torch.Tensor) -> torch.Tensor:
        if self.fast is not None:
            return self.fast(ws)
        if self.cuda_plan is not None:
            return self.cuda_plan(ws)
        return self.G.synthesis(ws, noise_mode=self.noise_mode, precision="fp16" if self.precision == "fp16" else "fp32")

    def _on_device(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _capture(self, batch: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        # Called with self.lock held and the engine's device current. Outside inference mode: a static input made
        # in inference mode could not be written by a later run outside it.
        with torch.inference_mode(False), torch.no_grad():
            static_in = torch.zeros(batch, self.info.num_ws, self.info.w_dim, device=self.device)
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: kernels chosen, workspaces allocated, outside the graph
                    self._forward(static_in)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, stream=stream, capture_error_mode="thread_local"):
                static_out = self._forward(static_in)
        return graph, static_in, static_out

    def _graphs_off(self, exc: BaseException) -> None:
        """A capture failed: render eagerly from now on, and say so (info.detail, the log)."""
        self.cuda_graphs = False
        self._graphs.clear()
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        self.info = dataclasses.replace(self.info, detail=f"{self.info.detail}, CUDA graphs off after a failed "
                                                          f"capture ({reason}): eager")
        log.warning("CUDA graph capture failed on %s (%s); this engine renders eagerly from now on",
                    self.device, reason)

    def prepare(self, batches) -> tuple[int, ...]:
        """Capture a CUDA graph for each batch size in ``batches`` (largest first, one shared memory pool) before
        any stream runs; later batches pad to the smallest of them that holds them. Returns the captured batch
        sizes (none without CUDA graphs, or after a failed capture, which turns graphs off: see ``info.detail``)."""
        sizes = sorted({int(b) for b in batches}, reverse=True)
        for b in sizes:
            if not self.info.min_batch <= b <= self.info.max_batch:
                raise ConfigError(f"batch bucket {b} is outside this engine's range "
                                  f"{self.info.min_batch}..{self.info.max_batch}")
        with self.lock, self._on_device():
            if not self.cuda_graphs:
                return ()
            try:
                for b in sizes:
                    if b not in self._graphs:
                        self._graphs[b] = self._capture(b)
            except RuntimeError as exc:  # torch.AcceleratorError is a RuntimeError
                with contextlib.suppress(RuntimeError):
                    torch.cuda.synchronize(self.device)
                self._graphs_off(exc)
                return ()
            return tuple(sorted(self._graphs))

    def bucket(self, batch: int) -> int:
        """The captured batch size a batch of ``batch`` runs in (``batch`` itself when none holds it)."""
        return min((b for b in self._graphs if b >= batch), default=batch)

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info)
        with self.lock, self._on_device():
            ws = ws.to(self.device, non_blocking=True)
            if self.cuda_graphs:
                batch = ws.shape[0]
                bucket = self.bucket(batch)
                if bucket not in self._graphs:  # an engine used without prepare(): capture this size now
                    self.prepare([batch])
            if not self.cuda_graphs:
                with torch.no_grad():
                    return self._forward(ws)
            graph, static_in, static_out = self._graphs[bucket]
            # Every replay on the engine's one stream: graphs share a memory pool, so two of them must never run
            # at once, whichever stream each caller is on. The caller's stream waits for the images.
            caller = torch.cuda.current_stream(self.device)
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            self._stream.wait_stream(caller)
            with torch.cuda.stream(self._stream):
                static_in[:batch].copy_(ws, non_blocking=True)
                graph.replay()
            caller.wait_stream(self._stream)
            ws.record_stream(self._stream)
            return static_out[:batch]
