"""What the figures depend on and what they cost: the machine (CPU, flags, threads, GPU, driver, library versions),
its measured matrix rate, and the process's memory (resident set now and at its peak)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import time

import torch

from ..engines.selection import cpu_flags, cpu_model
from .timing import sync

__all__ = ["cpu_model", "device_name", "environment", "has_native_bf16", "matrix_rate", "peak_rss_mib",
           "reset_peak_rss", "rss_mib"]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model() or platform.machine()} x{torch.get_num_threads()} threads"


def environment(device: str) -> dict:
    """What the figures depend on: CPU, its matrix-relevant flags, threads, GPU and driver, library versions."""
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c")))
    versions = {}
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    env = {"cpu": cpu_model(), "cpu_flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "python": platform.python_version(), "versions": versions, "gpu": None, "driver": None}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def matrix_rate(device: str, dtype: torch.dtype, seconds: float = 1.0) -> float | None:
    """Measured FLOP/s of a large square matrix product in ``dtype`` on ``device`` (None: not supported here)."""
    n = 2048 if device == "cpu" else 8192
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
    except (RuntimeError, TypeError):
        return None
    sync(device)
    runs, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        runs += 1
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and runs >= 2:
            return 2 * n ** 3 * runs / elapsed


def has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


# ---------------------------------------------------------------- peak memory


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set (Linux: ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    """The process's resident set now."""
    return _status_mib("VmRSS")


def peak_rss_mib() -> float | None:
    """The process's peak resident set since the last ``reset_peak_rss``."""
    return _status_mib("VmHWM")
