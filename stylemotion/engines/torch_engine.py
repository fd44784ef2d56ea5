"""The PyTorch engine: CPU or CUDA, float32 or the generator's FP16 blocks, optional CUDA graphs per batch size.

The engine renders with its own copy of the generator (``copy.deepcopy``, then moved to the engine's device and
put in eval mode): the caller's module keeps its device, dtype, training flag, ``requires_grad`` and parameters.
That costs one copy of the weights on the engine's device; later changes to the caller's module do not reach
the engine.

With CUDA graphs, each batch size is captured once (after a warm-up on a side stream) with static input and
output buffers; ``run`` copies ws into the static input and replays the graph: no allocation and no host sync
in the per-frame path. The returned images are that batch size's static output buffer (reused by the next run).

``plan``: ``"fast"`` (the default on the CPU for float32 and constant noise) renders with ``FastSynthesis``, the
CPU inference plan of the same network (Winograd for the 512-channel convolutions, the upsampling convolution as
one matrix product, constants folded: about 0.55x the time of the official form on 2 CPU cores, bench/results);
``"reference"`` renders with ``G.synthesis`` itself, in the official grouped form (the benchmark's baseline). On
CUDA, and for FP16 or non-constant noise, the engine always uses the reference network (FP16 blocks, cuDNN).

On the CPU the engine asks glibc to keep freed memory for reuse (``_malloc.py``: without it every large tensor is a
fresh mmap and a forward pass spends 40% of its time faulting pages in); ``retain_memory=False`` leaves malloc as
it is (the benchmark's baseline row, which runs as the official code would).
"""
from __future__ import annotations

import copy

import torch

from ..errors import ConfigError, EngineError
from ..export.networks import synthesis_spec
from ..models.stylegan2 import Generator
from .._malloc import retain_freed_memory
from ..models.stylegan2_fast import FastSynthesis
from .base import check_ws, info_from_spec


NOISE_MODES = ("const", "random", "none")  # only this engine renders other than the exported constant noise
PLANS = ("auto", "fast", "reference")


class TorchEngine:
    def __init__(self, G: Generator, *, device: str | torch.device = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False, max_batch: int = 64, noise_mode: str = "const", plan: str = "auto",
                 retain_memory: bool = True, detail: str = ""):
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
        self.plan = "fast" if plan == "fast" or (plan == "auto" and fast_ok) else "reference"
        self.G = copy.deepcopy(G).to(device).eval().requires_grad_(False)  # never the caller's module
        self.fast = FastSynthesis(self.G.synthesis, target="eager") if self.plan == "fast" else None
        spec = synthesis_spec(self.G)
        self.device, self.precision, self.cuda_graphs, self.noise_mode = device, precision, cuda_graphs, noise_mode
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        extra = (", CUDA graphs per batch size" if cuda_graphs else "") + f", {self.plan} plan"
        if device.type == "cpu" and retain_memory:
            extra += ", freed memory kept for reuse" if retain_freed_memory() else ", malloc left as it is"
        self.info = info_from_spec(spec, backend="torch", precision=precision, device=str(device), min_batch=1,
                                   max_batch=max_batch, detail=(detail + extra).strip(", "))

    def _forward(self, ws: torch.Tensor) -> torch.Tensor:
        if self.fast is not None:
            return self.fast(ws)
        return self.G.synthesis(ws, noise_mode=self.noise_mode, precision="fp16" if self.precision == "fp16" else "fp32")

    def _capture(self, batch: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = torch.zeros(batch, self.info.num_ws, self.info.w_dim, device=self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm-up: kernels chosen, workspaces allocated, outside the graph
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self._forward(static_in)
        return graph, static_in, static_out

    def run(self, ws: torch.Tensor) -> torch.Tensor:
        ws = check_ws(ws, self.info).to(self.device, non_blocking=True)
        if not self.cuda_graphs:
            with torch.no_grad():
                return self._forward(ws)
        batch = ws.shape[0]
        if batch not in self._graphs:
            self._graphs[batch] = self._capture(batch)
        graph, static_in, static_out = self._graphs[batch]
        static_in.copy_(ws, non_blocking=True)
        graph.replay()
        return static_out
