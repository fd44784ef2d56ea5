"""``backend="auto"``: the fastest engine here, found by measuring the candidates once and kept in the engine cache.

CPU flags and GPU names are not a reliable guide (the fastest CPU engine differs between Intel AMX, AMD Zen 3 and
Zen 4, and between batch sizes), so the factory offers every engine that can render this model here as a
``Candidate`` (a name and a builder), and ``choose`` builds each, gives it a warm-up run, then times them
round-robin (one run of each in turn, the order rotated every round, so a machine whose speed drifts slows all
alike) for a few runs, bounded in seconds (``Measurement``), and keeps the one with the lowest median.

The choice is stored in the engine cache under a ``ChoiceKey``: this machine (``machine_identity``), the CPU
threads, the model (``model_sha256``: its weights and config, and the ONNX file's content when one is given),
batch, precision, the candidates and the versions of the libraries that run them (``library_versions``). The next
run builds only the chosen engine. A cached record that does not parse, names an engine that is not a candidate
or whose figures do not say it was the fastest, is removed and the choice measured again, never trusted.

Only engines that can run here are offered (the factory names the others and why); a candidate that then fails
to build or run raises: a corrupt ONNX file is an error, never a quiet fall back to another engine.

``Choice.describe()`` is what ``EngineInfo.detail`` says, e.g.
``auto: torch-fast 331 ms < openvino-fast 498 ms (measured, batch 1, median of 3 runs)``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import EngineError
from .base import Engine
from .cache import ChoiceKey, EngineCache, gpu_identity

LIBRARIES = ("torch", "openvino", "onnxruntime", "onnxruntime-gpu", "tensorrt")


# ---------------------------------------------------------------- what the choice depends on


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_identity(device: str | torch.device = "cpu") -> str:
    """``"NVIDIA H200 sm9.0"`` on CUDA; on the CPU its model name, core count and a digest of its flags (two VMs
    that report the same model name can expose different instruction sets)."""
    device = torch.device(device)
    if device.type == "cuda":
        name, capability = gpu_identity(device)
        return f"{name} sm{capability}"
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    return f"{cpu_model()} x{os.cpu_count()} flags:{flags}"


def library_versions() -> tuple[tuple[str, str], ...]:
    """``(distribution, version)`` of each engine library installed (read from the metadata: nothing imported)."""
    out = []
    for dist in LIBRARIES:
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return tuple(out)


def model_sha256(G: torch.nn.Module, onnx_file: str | os.PathLike | None = None) -> str:
    """SHA-256 of the generator's config and every parameter and buffer (name, dtype, shape, bytes), and of the
    ONNX file's content (``onnx_content_sha256``, external data included) when one is given."""
    h = hashlib.sha256()
    init_kwargs = getattr(G, "init_kwargs", None)
    if callable(init_kwargs):
        h.update(json.dumps(init_kwargs(), sort_keys=True, default=str).encode())
    for name, t in G.state_dict().items():
        t = t.detach()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if onnx_file is not None:
        from ..export.onnx_export import onnx_content_sha256

        h.update(onnx_content_sha256(Path(onnx_file)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- candidates, measurement, choice


@dataclass(frozen=True)
class Candidate:
    """One engine ``auto`` may pick: a short stable name (``torch-fast``, ``openvino-fast``, ``onnxruntime-cpu``,
    ``torch-cuda-fp16-graphs``, ``tensorrt-fp16``, ...) and how to build it."""

    name: str
    build: Callable[[], Engine]


@dataclass(frozen=True)
class Measurement:
    """How long ``choose`` times: ``warmup`` runs of each engine (CUDA graph capture, OpenVINO's first inference),
    then rounds until ``runs`` rounds and ``min_seconds`` are in (at most ``max_rounds``), cut short after
    ``max_seconds`` once one round is in (large models on a CPU)."""

    warmup: int = 1
    runs: int = 3
    min_seconds: float = 0.2
    max_seconds: float = 10.0
    max_rounds: int = 50


@dataclass(frozen=True)
class Choice:
    chosen: str
    ms: dict[str, float]  # median ms per batch of each candidate measured
    batch: int
    runs: int  # timed rounds
    when: str  # ISO time of the measurement
    cached: bool = False
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        order = sorted(self.ms, key=lambda n: (self.ms[n], n))
        figures = " < ".join(f"{n} {_ms(self.ms[n])} ms" for n in order)
        how = f"cached from {self.when[:10]}" if self.cached else "measured"
        text = f"auto: {figures} ({how}, batch {self.batch}, median of {self.runs} runs)"
        return "; ".join((text,) + self.notes)

    def record(self) -> dict:
        return {"chosen": self.chosen, "ms": self.ms, "batch": self.batch, "runs": self.runs, "when": self.when}


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def choice_from_record(record: dict, key: ChoiceKey) -> Choice | None:
    """A cached choice, or None when the record is not one this key can trust: the chosen engine must be a
    candidate and the fastest of the finite, positive figures measured."""
    try:
        ms = {str(n): float(v) for n, v in record["ms"].items()}
        chosen, runs, when = str(record["chosen"]), int(record["runs"]), str(record["when"])
        batch = int(record["batch"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if (chosen not in key.candidates or chosen not in ms or batch != key.batch or runs < 1
            or not set(ms) <= set(key.candidates) or not all(math.isfinite(v) and v > 0 for v in ms.values())
            or ms[chosen] > min(ms.values())):
        return None
    return Choice(chosen, ms, batch, runs, when, cached=True)


def _sync(engine) -> None:
    device = str(getattr(engine.info, "device", "cpu"))
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def measure(engines: dict[str, Engine], ws: torch.Tensor, settings: Measurement = Measurement()
            ) -> dict[str, list[float]]:
    """Seconds per ``run`` of each engine after its warm-up, timed round-robin (one run of each in turn, the order
    rotated every round), each run synchronised before the clock is read."""
    inputs = {name: ws.to(engine.info.device) for name, engine in engines.items()}
    for name, engine in engines.items():
        for _ in range(settings.warmup):
            engine.run(inputs[name])
        _sync(engine)
    names = list(engines)
    times: dict[str, list[float]] = {n: [] for n in names}
    start, rounds = time.perf_counter(), 0
    while names:
        spent = time.perf_counter() - start
        if rounds >= settings.max_rounds or (rounds >= 1 and spent > settings.max_seconds):
            break
        if rounds >= settings.runs and spent >= settings.min_seconds:
            break
        k = rounds % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            engines[name].run(inputs[name])
            _sync(engines[name])
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return times


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def choose(candidates: Sequence[Candidate], key: ChoiceKey, ws: torch.Tensor, *, cache: EngineCache | None,
           settings: Measurement = Measurement()) -> tuple[Engine, Choice]:
    """The fastest candidate's engine and the figures it was chosen by: from ``cache`` when it holds a record for
    ``key`` that can be trusted (only the chosen engine is built), else measured now and stored (a cache that
    cannot be written is said in the choice's notes).

    ``ws``: ``[key.batch, num_ws, w_dim]``, the input every candidate is timed on. The factory offers only
    engines that can run here (it names the others and why); one that fails to build or run while measured
    raises (a corrupt ONNX file is an error, never a quiet fall back to another engine)."""
    names = [c.name for c in candidates]
    if not names or len(set(names)) != len(names) or tuple(names) != key.candidates:
        raise EngineError(f"choose: candidates {names} must be distinct, non-empty and those of the key "
                          f"{list(key.candidates)}")
    by_name = {c.name: c for c in candidates}
    if cache is not None:
        record = cache.load_choice(key)
        choice = choice_from_record(record, key) if record is not None else None
        if record is not None and choice is None:
            cache.remove_choice(key)  # a record this key cannot trust: measured again
        if choice is not None:
            return by_name[choice.chosen].build(), choice
    engines = {c.name: c.build() for c in candidates}
    times = measure(engines, ws, settings)
    ms = {n: _median(t) * 1e3 for n, t in times.items()}
    chosen = min(ms, key=lambda n: (ms[n], n))  # a tie goes by name, never by the order offered
    choice = Choice(chosen, ms, key.batch, min(len(t) for t in times.values()),
                    dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if cache is not None:
        try:
            cache.store_choice(key, choice.record())
        except OSError as exc:
            choice = dataclasses.replace(choice, notes=(f"choice not cached ({exc})",))
    return engines[chosen], choice


def choice_key(*, device: str, threads: int | None, model: str, batch: int, precision: str | None,
               candidates: Sequence[Candidate]) -> ChoiceKey:
    return ChoiceKey(machine_identity(device), int(threads or torch.get_num_threads()), model, int(batch),
                     precision or "default", tuple(c.name for c in candidates), library_versions())
